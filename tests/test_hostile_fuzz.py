"""Property-based fuzzing of the Distribution API over real HTTP: names, references, digests,
ranges, pagination, manifests and JSON shapes.

Whatever arrives: no 5xx; an error body carries only codes of the spec's table, or is plain
text; a refused manifest is not readable afterwards; an accepted one reads back byte for
byte; the store holds nothing partial. Examples are derandomised, so a failure repeats.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    canonical,
    descriptor,
    make_image,
    push_blob,
    push_image,
    sha256,
)
from tests.support.rawhttp import SPEC_CODES
from tests.support.servers import Cargohold
from tests.support.store import assert_store_consistent

FUZZ = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
REPO = "fuzz/target"
BLOB = os.urandom(1000)
CONFIG = b"{}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cargohold, httpx.Client]]:
    server = Cargohold(tmp_path_factory.mktemp("fuzz"))
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        push_image(client, REPO, make_image(), "v1")
        push_blob(client, REPO, BLOB)
        push_blob(client, REPO, CONFIG)
        yield server, client
    log = server.log_text()
    server.stop()
    assert "Traceback" not in log and "internal error" not in log, "the server logged an internal error"
    assert_store_consistent(server.data)


def assert_clean(response: httpx.Response) -> None:
    """No 5xx; an error is the spec's JSON with table codes, or plain text that says something."""
    where = f"{response.request.method} {response.request.url.raw_path[:200]!r}"
    assert response.status_code < 500, f"{where} answered {response.status_code}: {response.text[:300]}"
    if response.status_code < 400 or response.request.method == "HEAD":
        return
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        codes = [error["code"] for error in response.json()["errors"]]
        assert codes and set(codes) <= SPEC_CODES, f"{where}: codes outside the spec's table: {codes}"
    else:
        assert content_type.startswith("text/plain") and response.text.strip(), f"{where}: {content_type!r}"


def segment(text: str, safe: str = "") -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe=safe)


texts = st.text(st.characters(codec="utf-8"), max_size=300)
name_like = st.one_of(
    texts,
    st.from_regex(r"[a-z0-9._/-]{1,300}", fullmatch=True),
    st.lists(st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", fullmatch=True), min_size=1, max_size=8).map("/".join),
)


@FUZZ
@given(name=name_like, endpoint=st.sampled_from(["tags/list", "manifests/v1", "blobs/uploads/", "referrers/x"]))
def test_any_repository_name(api: tuple[Cargohold, httpx.Client], name: str, endpoint: str) -> None:
    _, client = api
    response = client.get(f"/v2/{segment(name, safe='/')}/{endpoint}")
    assert_clean(response)


hexes = st.text("0123456789abcdefABCDEF", min_size=0, max_size=140)
digest_like = st.one_of(
    texts,
    st.builds(
        lambda algorithm, encoded: f"{algorithm}:{encoded}",
        st.sampled_from(["sha256", "sha512", "SHA256", "md5", "sha256+b64", "blake3", "", "sha384"]),
        hexes,
    ),
)


@FUZZ
@given(
    digest=digest_like,
    method=st.sampled_from(["GET", "HEAD", "DELETE"]),
    kind=st.sampled_from(["blobs", "manifests", "referrers"]),
)
def test_any_digest(api: tuple[Cargohold, httpx.Client], digest: str, method: str, kind: str) -> None:
    _, client = api
    if kind == "referrers" and method != "GET":
        method = "GET"
    response = client.request(method, f"/v2/{REPO}/{kind}/{segment(digest, safe=':')}")
    assert_clean(response)


@FUZZ
@given(reference=texts, method=st.sampled_from(["GET", "HEAD", "DELETE", "PUT"]))
def test_any_manifest_reference(api: tuple[Cargohold, httpx.Client], reference: str, method: str) -> None:
    _, client = api
    path = f"/v2/{REPO}/manifests/{segment(reference, safe=':')}"
    manifest = _manifest({"annotations": {"nonce": uuid.uuid4().hex}}) if method == "PUT" else None
    response = client.request(method, path, content=manifest, headers={"content-type": OCI_MANIFEST})
    assert_clean(response)
    if manifest is not None:
        after = client.get(path)
        assert (after.content == manifest) == (response.status_code == 201), "readable exactly when accepted"


range_numbers = st.one_of(st.just(""), st.integers(0, 2000).map(str), st.integers(0, 10**40).map(str))
# What a header may carry (h11 refuses control characters and outer whitespace).
header_texts = st.from_regex(r"[!-~](?:[ -~]{0,200}[!-~])?", fullmatch=True)
range_like = st.one_of(
    header_texts,
    st.builds(lambda a, b: f"bytes={a}-{b}", range_numbers, range_numbers),
    st.builds(lambda a, b, c: f"bytes={a}-{b},{c}-", range_numbers, range_numbers, range_numbers),
)


@FUZZ
@given(header=range_like)
def test_any_range(api: tuple[Cargohold, httpx.Client], header: str) -> None:
    _, client = api
    response = client.get(f"/v2/{REPO}/blobs/{sha256(BLOB)}", headers={"range": header})
    assert_clean(response)
    assert response.status_code in (200, 206, 416), response.status_code
    if response.status_code == 206:
        first, last = response.headers["content-range"].removeprefix("bytes ").split("/")[0].split("-")
        assert response.content == BLOB[int(first) : int(last) + 1]
    elif response.status_code == 200:
        assert response.content == BLOB
    else:
        assert response.headers["content-range"] == f"bytes */{len(BLOB)}"


@FUZZ
@given(
    n=st.one_of(st.none(), texts, st.integers(0, 10**30).map(str), st.integers(-5, 5).map(str)),
    last=st.one_of(st.none(), texts),
    listing=st.sampled_from([f"/v2/{REPO}/tags/list", "/v2/_catalog"]),
)
def test_any_pagination(api: tuple[Cargohold, httpx.Client], n: str | None, last: str | None, listing: str) -> None:
    _, client = api
    params = {k: v for k, v in {"n": n, "last": last}.items() if v is not None}
    response = client.get(listing, params=params)
    assert_clean(response)
    if response.status_code == 200:
        items = response.json()["tags" if "tags" in listing else "repositories"]
        assert items == sorted(items)
        if n is not None and n.isascii() and n.isdigit():
            assert len(items) <= int(n)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)


def _nested(depth: int, opener: str) -> str:
    """JSON text nested `depth` levels deep (as text: building it as objects would recurse)."""
    if opener == "[":
        return "[" * depth + '"deep"' + "]" * depth
    return '{"k":' * depth + '"deep"' + "}" * depth


def _manifest(extra: dict[str, Any]) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", CONFIG),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", BLOB)],
        **extra,
    }
    return canonical(document)


field_names = st.sampled_from(["annotations", "x-unknown", "config", "layers", "subject", "artifactType", "manifests"])
encodings = st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])


@FUZZ
@given(
    field=field_names,
    value=st.one_of(
        json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
        st.builds(_nested, st.integers(50, 5000), st.sampled_from(["[", "{"])),
    ),
    encoding=encodings,
    content_type=st.sampled_from([OCI_MANIFEST, OCI_INDEX, "application/json", ""]),
)
def test_any_manifest_shape(
    api: tuple[Cargohold, httpx.Client], field: str, value: str, encoding: str, content_type: str
) -> None:
    _, client = api
    base = {k: v for k, v in json.loads(_manifest({"x-nonce": uuid.uuid4().hex})).items() if k != field}
    text = json.dumps(base)[:-1] + f',"{field}":{value}' + "}"
    try:
        payload = text.encode(encoding)
    except UnicodeEncodeError:  # lone surrogates cannot be encoded at all
        return
    tag = f"t{uuid.uuid4().hex[:12]}"
    headers = {"content-type": content_type} if content_type else {}
    response = client.put(f"/v2/{REPO}/manifests/{tag}", content=payload, headers=headers)
    assert_clean(response)
    stored = client.get(f"/v2/{REPO}/manifests/{tag}")
    if response.status_code == 201:
        assert encoding == "utf-8", "only UTF-8 without a byte-order mark is JSON between systems"
        assert stored.content == payload
    else:
        assert response.status_code in (400, 404), response.text
        assert stored.status_code == 404, "a refused manifest is not readable"
        assert client.get(f"/v2/{REPO}/manifests/{sha256(payload)}").status_code == 404


@FUZZ
@given(garbage=st.one_of(st.binary(max_size=2000), texts.map(str.encode), st.just(b"[" * 1_000_000)))
def test_any_bytes_as_a_manifest(api: tuple[Cargohold, httpx.Client], garbage: bytes) -> None:
    _, client = api
    tag = f"g{uuid.uuid4().hex[:12]}"
    response = client.put(f"/v2/{REPO}/manifests/{tag}", content=garbage, headers={"content-type": OCI_MANIFEST})
    assert_clean(response)
    assert response.status_code == 400
    assert client.get(f"/v2/{REPO}/manifests/{tag}").status_code == 404
