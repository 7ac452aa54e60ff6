"""The management API, the OAuth2 grants of /token, key rotation, anonymous pull and login limits."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable

import httpx
import jwt

from tests.support.auth import SERVICE, SecureRegistry
from tests.support.oci import make_image, push_image
from tests.support.servers import Cargohold
from tests.support.waiting import wait_until


def admin(registry: SecureRegistry) -> httpx.Client:
    return registry.client(auth=("admin", registry.admin_password))


def test_management_api_users_robots_policies_audit(secure_registry: SecureRegistry) -> None:
    name = f"api-{uuid.uuid4().hex[:6]}"
    with admin(secure_registry) as api:
        created = api.post("/api/v1/users", json={"name": name, "password": "api-user-password", "groups": ["devs"]})
        assert created.status_code == 201, created.text
        assert created.json()["groups"] == ["devs"] and "password" not in created.text
        secure_registry.secrets.add("api-user-password")
        policy = api.post("/api/v1/policies", json={"subject": "group:devs", "scope": "apigroup/*:pull,push"})
        assert policy.status_code == 201, policy.text
        robot = api.post(
            "/api/v1/robots", json={"name": f"{name}-ci", "scopes": ["repository:apigroup/*:pull"], "expires": "1d"}
        )
        assert robot.status_code == 201, robot.text
        secret = robot.json()["secret"]
        secure_registry.secrets.add(secret)
        assert secret.startswith("chr_")
        assert [r["name"] for r in api.get("/api/v1/robots").json()].count(f"{name}-ci") == 1
        assert name in [u["name"] for u in api.get("/api/v1/users").json()]
        # duplicate and malformed requests are clear 400s
        assert api.post("/api/v1/users", json={"name": name, "password": "another-password"}).status_code == 400
        bad = api.post("/api/v1/robots", json={"name": "x", "scopes": ["nonsense"]})
        assert bad.status_code == 400 and "PATTERN:ACTIONS" in bad.json()["errors"][0]["message"]
        assert api.post("/api/v1/users", content=b"not json").status_code == 400
        assert api.get("/api/v1/nowhere").status_code == 404
        assert api.put("/api/v1/users").status_code == 405

    # the group policy applies to the new user; the robot may pull only
    repo = f"apigroup/{uuid.uuid4().hex[:6]}"
    with secure_registry.client(auth=(name, "api-user-password")) as user:
        assert push_image(user, repo, make_image(), "v1").status_code == 201
    with secure_registry.client(auth=(f"{name}-ci", secret)) as ci:
        assert ci.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
        assert ci.post(f"/v2/{repo}/blobs/uploads/").status_code == 403
        assert ci.get("/api/v1/users").status_code == 403, "robots are never administrators"

    with admin(secure_registry) as api:
        events = api.get("/api/v1/audit", params={"actor": name, "action": "manifest.push"}).json()
        assert [e["target"].split("@")[0] for e in events] == [repo]
        assert events[0]["address"] == "127.0.0.1" and events[0]["request_id"]
        denied = api.get("/api/v1/audit", params={"actor": f"{name}-ci", "action": "access."}).json()
        assert {e["action"] for e in denied} == {"access.push", "access.admin"}
        changes = api.get("/api/v1/audit", params={"actor": "admin", "since": "1h"}).json()
        assert {"user.create", "policy.set", "robot.create"} <= {e["action"] for e in changes}
        assert api.delete(f"/api/v1/users/{name}").status_code == 200
    with secure_registry.client(auth=(name, "api-user-password")) as user:
        assert user.get("/v2/").status_code == 401, "a deleted user is refused at once"


def test_cli_and_api_show_the_same_json(secure_registry: SecureRegistry) -> None:
    """One view per record: `--json` of the CLI and the management API print the same document."""
    name = f"same-{uuid.uuid4().hex[:6]}"
    with admin(secure_registry) as api:
        robot = api.post("/api/v1/robots", json={"name": name, "scopes": ["repository:same/*:pull"]})
        assert robot.status_code == 201, robot.text
        secret = robot.json()["secret"]
        secure_registry.secrets.add(secret)
        from_api = {
            "robots": next(r for r in api.get("/api/v1/robots").json() if r["name"] == name),
            "tokens": [t for t in api.get("/api/v1/tokens").json() if t["owner"] == name],
            "policies": api.get("/api/v1/policies").json(),
        }
    from_cli = {
        "robots": next(r for r in json.loads(secure_registry.cli("robot", "ls", "--json").stdout) if r["name"] == name),
        "tokens": [t for t in json.loads(secure_registry.cli("token", "ls", "--json").stdout) if t["owner"] == name],
        "policies": json.loads(secure_registry.cli("policy", "ls", "--json").stdout),
    }
    assert from_api["robots"]["scopes"] == ["same/*:pull"]
    assert from_api["tokens"] and secret not in json.dumps(from_api["tokens"])
    assert from_cli == from_api


def test_usage_and_repository_delete_through_the_api(secure_registry: SecureRegistry) -> None:
    repo = f"team/usage-{uuid.uuid4().hex[:6]}"
    image = make_image(layer_count=1, layer_size=5000)
    with admin(secure_registry) as api:
        assert push_image(api, repo, image, "v1").status_code == 201
        usage = {row["name"]: row for row in api.get("/api/v1/usage").json()}
        assert usage[repo]["bytes"] == len(image.config) + len(image.layers[0])
        deleted = api.delete(f"/api/v1/repositories/{repo}")
        assert deleted.status_code == 200 and deleted.json()["tags"] == 1
        assert api.get(f"/v2/{repo}/tags/list").status_code == 404
        assert api.delete(f"/api/v1/repositories/{repo}").status_code == 404
        assert api.delete("/api/v1/repositories/Bad..Name").json()["errors"][0]["code"] == "NAME_INVALID"


def test_oauth_password_and_refresh_grants(secure_registry: SecureRegistry) -> None:
    name, password = f"oauth-{uuid.uuid4().hex[:6]}", "oauth-password-1"
    repo = f"oauth/{uuid.uuid4().hex[:6]}"
    secure_registry.add_user(name, password, "oauth/*:pull,push")
    with secure_registry.client() as client:
        form = {"grant_type": "password", "username": name, "password": password, "service": SERVICE,
                "scope": f"repository:{repo}:pull,push", "client_id": "docker", "access_type": "offline"}  # fmt: skip
        first = client.post("/token", data=form)
        assert first.status_code == 200, first.text
        refresh = first.json()["refresh_token"]
        secure_registry.secrets |= {refresh, first.json()["access_token"]}
        assert first.json()["scope"] == f"repository:{repo}:pull,push"
        again = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh,
                                             "service": SERVICE, "scope": f"repository:{repo}:pull"})  # fmt: skip
        assert again.status_code == 200, again.text
        claims = jwt.decode(again.json()["access_token"], options={"verify_signature": False})
        assert claims["sub"] == name and claims["access"][0]["actions"] == ["pull"]
        # GET with offline_token, as `docker login` does
        login = client.get("/token", params={"service": SERVICE, "offline_token": "true", "client_id": "docker"},
                           auth=(name, password))  # fmt: skip
        assert login.status_code == 200 and login.json()["refresh_token"].startswith("chf_")
        secure_registry.secrets.add(login.json()["refresh_token"])
        # a new password ends the sessions the old one began
        secure_registry.cli("user", "passwd", name, "--password-stdin", stdin="oauth-password-2\n")
        secure_registry.secrets.add("oauth-password-2")
        stale = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
        assert stale.status_code == 401 and stale.json()["error"] == "invalid_grant"
        assert client.get("/token", auth=(name, password)).status_code == 401
        assert client.get("/token", auth=(name, "oauth-password-2")).status_code == 200


def test_key_rotation_keeps_tokens_in_flight(secure_registry: SecureRegistry) -> None:
    token = secure_registry.token("admin", secure_registry.admin_password, "repository:team/rotate:pull")
    old_kid = jwt.get_unverified_header(token)["kid"]
    with admin(secure_registry) as api:
        rotated = api.post("/api/v1/keys/rotate")
        assert rotated.status_code == 200 and rotated.json()["active"] != old_kid
    with secure_registry.bearer(token) as client:
        assert client.get("/v2/").status_code == 200, "a token signed before the rotation still works"
    fresh = secure_registry.token("admin", secure_registry.admin_password, "repository:team/rotate:pull")
    assert jwt.get_unverified_header(fresh)["kid"] == rotated.json()["active"]
    with secure_registry.bearer(fresh) as client:
        assert client.get("/v2/").status_code == 200


def test_anonymous_pull_by_policy(secure_registry: SecureRegistry) -> None:
    repo = f"public/{uuid.uuid4().hex[:6]}"
    with admin(secure_registry) as api:
        assert push_image(api, repo, make_image(), "v1").status_code == 201
    with secure_registry.client() as anonymous:
        assert anonymous.get(f"/v2/{repo}/tags/list").status_code == 401
    secure_registry.cli("policy", "add", "anonymous", "public/*:pull")
    with secure_registry.client() as anonymous:
        # A running registry picks up anonymous policy changes within 10 s.
        wait_until(lambda: anonymous.get(f"/v2/{repo}/tags/list").status_code == 200, "anonymous pull allowed", 12)
        assert anonymous.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
        assert anonymous.post(f"/v2/{repo}/blobs/uploads/").status_code == 401
        token = anonymous.get("/token", params={"service": SERVICE, "scope": f"repository:{repo}:pull,push"}).json()
        assert token["scope"] == f"repository:{repo}:pull"


def test_failed_logins_are_rate_limited(cargohold_with: Callable[[dict[str, str]], Cargohold]) -> None:
    server = cargohold_with({"CARGOHOLD_AUTH": "on", "CARGOHOLD_AUTH_MAX_FAILURES": "3",
                             "CARGOHOLD_AUTH_FAILURE_WINDOW": "4s"})  # fmt: skip
    password = server.admin_password()
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.get("/v2/", auth=("admin", "wrong-password")).status_code == 401
        limited = client.get("/v2/", auth=("admin", "wrong-password"))
        assert limited.status_code == 429
        assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert 1 <= int(limited.headers["retry-after"]) <= 4
        # even the right password waits: a guesser learns nothing from the answer
        assert client.get("/v2/", auth=("admin", password)).status_code == 429
        assert client.get("/token", auth=("admin", password)).status_code == 429
        time.sleep(int(limited.headers["retry-after"]) + 0.5)
        assert client.get("/v2/", auth=("admin", password)).status_code == 200


def test_openapi_description_is_valid_and_true(secure_registry: SecureRegistry) -> None:
    from openapi_spec_validator import validate

    with secure_registry.client() as anonymous:
        document = anonymous.get("/api/v1/openapi.json").json()
    validate(document)
    with admin(secure_registry) as api:
        for path, operations in document["paths"].items():
            if "get" in operations and "{" not in path:
                assert api.get(path).status_code == 200, path
    assert {"/api/v1/users", "/api/v1/robots", "/api/v1/audit", "/api/v1/usage"} <= set(document["paths"])


def test_methods_no_one_may_use_are_refused_before_any_handler(secure_registry: SecureRegistry) -> None:
    with secure_registry.client() as anonymous:
        for method, path in [("POST", "/v2/team/x/manifests/v1"), ("PUT", "/v2/team/x/blobs/sha256:" + "0" * 64),
                             ("PATCH", "/v2/team/x/tags/list"), ("HEAD", "/v2/team/x/blobs/uploads/abc")]:  # fmt: skip
            response = anonymous.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
            assert response.headers["allow"]


def test_old_audit_events_are_pruned(cargohold_with: Callable[[dict[str, str]], Cargohold]) -> None:
    server = cargohold_with({"CARGOHOLD_AUTH": "on", "CARGOHOLD_AUDIT_RETENTION": "1h",
                             "CARGOHOLD_UPLOAD_SWEEP_INTERVAL": "1s"})  # fmt: skip
    password = server.admin_password()
    with httpx.Client(base_url=server.url, auth=("admin", password)) as client:
        assert push_image(client, "team/audited", make_image(), "v1").status_code == 201
        db = sqlite3.connect(server.data / "metadata.sqlite3")
        try:
            with db:
                db.execute("UPDATE audit_event SET at = at - 7200 WHERE action = 'user.create'")
            deadline = time.monotonic() + 15
            while (
                time.monotonic() < deadline
                and db.execute("SELECT count(*) FROM audit_event WHERE action = 'user.create'").fetchone()[0]
            ):
                time.sleep(0.2)
            actions = {row[0] for row in db.execute("SELECT action FROM audit_event")}
        finally:
            db.close()
        assert "user.create" not in actions, "an event older than the retention was kept"
        assert "manifest.push" in actions, "a recent event was pruned"
