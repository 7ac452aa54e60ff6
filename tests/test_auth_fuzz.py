"""Fuzzing the live server's auth surface: the Authorization header, scopes and /token.

Whatever arrives, the answer is a clean refusal or a token that grants no more than the
caller's policies: never a 500, never an unexpected grant.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.auth import SERVICE, SecureRegistry
from tests.support.oci import make_image, push_image
from tests.support.servers import Cargohold

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
REPO = "team/fuzzed"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureRegistry, httpx.Client, str]]:
    # A registry of its own, plain HTTP (speed), with a failure limit no fuzzing run reaches.
    server = Cargohold(tmp_path_factory.mktemp("fuzz"), auth=True, extra_env={"CARGOHOLD_AUTH_MAX_FAILURES": "1000000"})
    server.start()
    registry = SecureRegistry(server)
    registry.add_user("reader", "reader-password-9", "team/*:pull")
    with httpx.Client(base_url=server.url, auth=("admin", registry.admin_password)) as admin:
        assert push_image(admin, REPO, make_image(), "v1").status_code == 201
    valid = httpx.get(
        f"{server.url}/token",
        params={"service": SERVICE, "scope": f"repository:{REPO}:pull"},
        auth=("reader", "reader-password-9"),
    ).json()["token"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield registry, client, valid
    server.stop()


def mangle(token: str, data: st.DataObject) -> str:
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("AaZz09-_.="))
    return token[:position] + replacement + token[position + 1 :]


header_values = st.one_of(
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "ignore").decode("latin-1")),
    st.builds(lambda b: "Basic " + base64.b64encode(b).decode(), st.binary(max_size=100)),
    st.builds(
        lambda u, p: "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode(),
        st.text(max_size=30),
        st.text(max_size=30),
    ),
    st.builds(lambda t: "Bearer " + t, st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.=", max_size=300)),
    st.sampled_from(["Bearer", "Basic", "Basic ", "Bearer ", "Negotiate abc", "basic Og==", "Basic Og=="]),
)


@FUZZ
@given(header=header_values)
def test_fuzzed_authorization_header_is_refused_cleanly(target: tuple, header: str) -> None:
    _, client, _ = target
    try:
        response = client.get(
            f"/v2/{REPO}/manifests/v1", headers={"authorization": header.encode("latin-1"), "accept": "*/*"}
        )
    except httpx.LocalProtocolError:
        return  # httpx itself refuses to send some of these headers
    assert response.status_code in (400, 401), (header, response.status_code, response.text)
    if response.content:  # an empty 400 is the HTTP server refusing a malformed header line itself
        assert response.json()["errors"][0]["code"] in ("UNAUTHORIZED", "UNSUPPORTED")


@FUZZ
@given(data=st.data())
def test_mangled_tokens_grant_nothing(target: tuple, data: st.DataObject) -> None:
    _, client, valid = target
    token = mangle(valid, data)
    response = client.get(f"/v2/{REPO}/manifests/v1", headers={"authorization": f"Bearer {token}", "accept": "*/*"})
    if token == valid or response.status_code == 200:
        # a change inside base64 padding bits can leave the decoded token identical
        assert jwt.get_unverified_header(token) and _same_claims(token, valid)
    else:
        assert response.status_code == 401, response.text


def _same_claims(token: str, valid: str) -> bool:
    def decode(t: str) -> object:
        return jwt.decode(t, options={"verify_signature": False})

    return decode(token) == decode(valid)


scope_text = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda kind, name, actions: f"{kind}:{name}:{actions}",
        st.sampled_from(["repository", "registry", "repository(plugin)", "x", ""]),
        st.one_of(
            st.sampled_from(["team/a", "prod/a", "catalog", "admin", "*", "team/*", "team/../prod"]),
            st.text(max_size=20),
        ),
        st.one_of(st.sampled_from(["pull", "push", "delete", "*", "pull,push,delete", "admin"]), st.text(max_size=20)),
    ),
)


@FUZZ
@given(scopes=st.lists(scope_text, max_size=4), service=st.sampled_from([SERVICE, "", "other"]))
def test_token_endpoint_grants_no_more_than_policy(target: tuple, scopes: list[str], service: str) -> None:
    _, client, _ = target
    params = [("scope", s) for s in scopes] + ([("service", service)] if service else [])
    response = client.get("/token", params=params, auth=("reader", "reader-password-9"))
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
        for entry in claims["access"]:
            assert entry["type"] == "repository" and entry["name"].startswith("team/"), entry
            assert entry["actions"] == ["pull"], entry


@FUZZ
@given(
    form=st.dictionaries(
        st.sampled_from(
            ["grant_type", "username", "password", "refresh_token", "scope", "service", "client_id", "access_type"]
        ),
        st.one_of(st.text(max_size=40), st.sampled_from(["password", "refresh_token", "admin", "offline", "chf_abc"])),
        max_size=8,
    )
)
def test_oauth_form_without_valid_credentials_gets_no_token(target: tuple, form: dict[str, str]) -> None:
    _, client, _ = target
    response = client.post("/token", data=form)
    assert response.status_code in (400, 401), (form, response.status_code, response.text)
    assert "access_token" not in response.text
    json.loads(response.text)  # always a JSON error body
