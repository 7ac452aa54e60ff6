"""Malformed requests get the spec's error code and a readable message, never a 500,
and leave nothing partial in the store."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.oci import OCI_MANIFEST, canonical, descriptor, make_image, push_blob, push_image, sha256
from tests.support.servers import Cargohold
from tests.support.store import assert_store_consistent
from tests.support.waiting import wait_until

REPO = "bad/input"
UNKNOWN_DIGEST = sha256(b"never uploaded")
UNKNOWN_UPLOAD = "0" * 32


PLAIN = "plain"  # no code of the spec's table fits: a plain-text body, not an OCI error document


@dataclass
class Case:
    name: str
    method: str
    path: str
    status: int
    code: str | None  # the spec code, PLAIN, or None when the body is not looked at (HEAD)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def manifest_with(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", b"{}"),
        "layers": [],
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


M = {"content-type": OCI_MANIFEST}
CASES = [
    Case("uppercase name", "GET", "/v2/Bad/Name/tags/list", 400, "NAME_INVALID"),
    Case("double dot name", "GET", "/v2/a..b/manifests/latest", 400, "NAME_INVALID"),
    Case("trailing separator", "GET", "/v2/abc-/manifests/latest", 400, "NAME_INVALID"),
    Case("name too long", "GET", "/v2/" + "a" * 300 + "/tags/list", 400, "NAME_INVALID"),
    Case("traversal in upload id", "GET", f"/v2/{REPO}/blobs/uploads/..%2F..%2Fetc", 404, PLAIN),
    Case("trailing slash on a blob", "GET", "/v2/{repo}/blobs/{blob}/", 404, PLAIN),
    Case("traversal in name", "GET", "/v2/a/..%2F..%2Fb/tags/list", 400, "NAME_INVALID"),
    Case("digest not hex", "GET", f"/v2/{REPO}/blobs/sha256:xyz", 400, "DIGEST_INVALID"),
    Case("digest short", "GET", f"/v2/{REPO}/blobs/sha256:" + "a" * 63, 400, "DIGEST_INVALID"),
    Case("digest uppercase", "GET", f"/v2/{REPO}/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
    Case("digest algorithm", "GET", f"/v2/{REPO}/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
    Case("digest no algorithm", "HEAD", f"/v2/{REPO}/blobs/" + "a" * 64, 400, None),
    Case("unknown blob", "GET", f"/v2/{REPO}/blobs/{UNKNOWN_DIGEST}", 404, "BLOB_UNKNOWN"),
    Case("unknown blob head", "HEAD", f"/v2/{REPO}/blobs/{UNKNOWN_DIGEST}", 404, None),
    Case("delete unknown blob", "DELETE", f"/v2/{REPO}/blobs/{UNKNOWN_DIGEST}", 404, "BLOB_UNKNOWN"),
    Case("digest with a newline", "GET", f"/v2/{REPO}/blobs/{UNKNOWN_DIGEST}%0A", 400, "DIGEST_INVALID"),
    Case("malformed range", "GET", "/v2/{repo}/blobs/{blob}", 416, PLAIN, {"range": "bytes=abc"}),
    Case("range past end", "GET", "/v2/{repo}/blobs/{blob}", 416, PLAIN, {"range": "bytes=5000-"}),
    Case("multi range", "GET", "/v2/{repo}/blobs/{blob}", 416, PLAIN, {"range": "bytes=0-1,5-6"}),
    Case("range of 5000 digits", "GET", "/v2/{repo}/blobs/{blob}", 416, PLAIN, {"range": "bytes=" + "9" * 5000 + "-"}),
    # A tag that cannot exist is simply unknown (distribution-spec conformance, "Pull manifests").
    Case("invalid tag", "GET", f"/v2/{REPO}/manifests/-bad", 404, "MANIFEST_UNKNOWN"),
    Case("conformance invalid name", "GET", f"/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
    Case("conformance invalid name head", "HEAD", f"/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME", 404, None),
    Case("delete invalid tag", "DELETE", f"/v2/{REPO}/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
    Case("invalid manifest digest", "GET", f"/v2/{REPO}/manifests/sha256:zz", 400, "DIGEST_INVALID"),
    Case("unknown manifest", "GET", "/v2/{repo}/manifests/nope", 404, "MANIFEST_UNKNOWN"),
    Case("unknown repository", "GET", "/v2/no/such/repo/manifests/latest", 404, "NAME_UNKNOWN"),
    Case("manifest not json", "PUT", f"/v2/{REPO}/manifests/x", 400, "MANIFEST_INVALID", M, b"{not json"),
    Case("manifest array", "PUT", f"/v2/{REPO}/manifests/x", 400, "MANIFEST_INVALID", M, b"[]"),
    Case("manifest binary", "PUT", f"/v2/{REPO}/manifests/x", 400, "MANIFEST_INVALID", M, b"\xff\xfe\x00"),
    Case(
        "manifest utf-16",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with().decode().encode("utf-16"),
    ),
    Case(
        "manifest utf-16le",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with().decode().encode("utf-16-le"),
    ),
    Case(
        "manifest utf-32",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with().decode().encode("utf-32"),
    ),
    Case(
        "manifest with bom",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        b"\xef\xbb\xbf" + manifest_with(),
    ),
    Case(
        "manifest nan",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with()[:-1] + b',"x":NaN}',
    ),
    Case(
        "duplicate keys",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with()[:-1] + b',"layers":[]}',
    ),
    Case(
        "deep arrays",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with()[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ),
    Case(
        "deep objects",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with()[:-1] + b',"annotations":{"a":' + b'{"k":' * 5000 + b"1" + b"}" * 5001 + b"}",
    ),
    Case("a million [", "PUT", f"/v2/{REPO}/manifests/x", 400, "MANIFEST_INVALID", M, b"[" * 1_000_000),
    Case("schema 1", "PUT", f"/v2/{REPO}/manifests/x", 400, "MANIFEST_INVALID", M, b'{"schemaVersion":1}'),
    Case(
        "unknown media type",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        {"content-type": "application/vnd.example.unknown+json"},
        manifest_with(mediaType=None),
    ),
    Case(
        "content-type mismatch",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        {"content-type": "application/vnd.docker.distribution.manifest.v2+json"},
        manifest_with(),
    ),
    Case("no config", "PUT", f"/v2/{REPO}/manifests/x", 400, "MANIFEST_INVALID", M, manifest_with(config=None)),
    Case("layers not a list", "PUT", f"/v2/{REPO}/manifests/x", 400, "MANIFEST_INVALID", M, manifest_with(layers={})),
    Case(
        "bad descriptor digest",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with(config={"mediaType": "a/b", "digest": "sha256:nothex", "size": 2}),
    ),
    Case(
        "negative size",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        M,
        manifest_with(config={"mediaType": "a/b", "digest": UNKNOWN_DIGEST, "size": -1}),
    ),
    Case(
        "index with layers",
        "PUT",
        f"/v2/{REPO}/manifests/x",
        400,
        "MANIFEST_INVALID",
        {"content-type": "application/vnd.oci.image.index.v1+json"},
        b'{"schemaVersion":2,"manifests":[],"layers":[]}',
    ),
    Case("oversized manifest", "PUT", f"/v2/{REPO}/manifests/x", 413, "SIZE_INVALID", M, b" " * (4 * 1024 * 1024 + 1)),
    Case(
        "manifest digest mismatch",
        "PUT",
        f"/v2/{REPO}/manifests/{UNKNOWN_DIGEST}",
        400,
        "DIGEST_INVALID",
        M,
        manifest_with(),
    ),
    Case("manifest blob unknown", "PUT", f"/v2/{REPO}/manifests/x", 404, "MANIFEST_BLOB_UNKNOWN", M, manifest_with()),
    Case("invalid tag on put", "PUT", f"/v2/{REPO}/manifests/.hidden", 400, "MANIFEST_INVALID", M, manifest_with()),
    Case("tag with a newline", "PUT", f"/v2/{REPO}/manifests/v1%0A", 400, "MANIFEST_INVALID", M, manifest_with()),
    Case("patch unknown upload", "PATCH", f"/v2/{REPO}/blobs/uploads/{UNKNOWN_UPLOAD}", 404, "BLOB_UPLOAD_UNKNOWN"),
    Case(
        "put unknown upload",
        "PUT",
        f"/v2/{REPO}/blobs/uploads/{UNKNOWN_UPLOAD}?digest={UNKNOWN_DIGEST}",
        404,
        "BLOB_UPLOAD_UNKNOWN",
    ),
    Case("status unknown upload", "GET", f"/v2/{REPO}/blobs/uploads/{UNKNOWN_UPLOAD}", 404, "BLOB_UPLOAD_UNKNOWN"),
    Case("cancel unknown upload", "DELETE", f"/v2/{REPO}/blobs/uploads/{UNKNOWN_UPLOAD}", 404, "BLOB_UPLOAD_UNKNOWN"),
    Case("malformed upload id", "GET", f"/v2/{REPO}/blobs/uploads/not-an-id", 404, "BLOB_UPLOAD_UNKNOWN"),
    Case("upload of another repository", "GET", "/v2/other/repo/blobs/uploads/{upload}", 404, "BLOB_UPLOAD_UNKNOWN"),
    Case(
        "malformed content-range",
        "PATCH",
        "/v2/{repo}/blobs/uploads/{upload}",
        400,
        "BLOB_UPLOAD_INVALID",
        {"content-range": "zero-ten"},
        b"abc",
    ),
    Case(
        "content-range skips ahead",
        "PATCH",
        "/v2/{repo}/blobs/uploads/{upload}",
        416,
        "BLOB_UPLOAD_INVALID",
        {"content-range": "10-12"},
        b"abc",
    ),
    Case(
        "content-range disagrees with length",
        "PATCH",
        "/v2/{repo}/blobs/uploads/{upload}",
        400,
        "SIZE_INVALID",
        {"content-range": "0-9"},
        b"abc",
    ),
    Case(
        "final chunk not at the offset",
        "PUT",
        "/v2/{repo}/blobs/uploads/{upload}?digest=" + UNKNOWN_DIGEST,
        416,
        "BLOB_UPLOAD_INVALID",
        {"content-range": "10-12"},
        b"abc",
    ),
    Case("finish without digest", "PUT", "/v2/{repo}/blobs/uploads/{upload}", 400, "DIGEST_INVALID"),
    Case("finish with bad digest", "PUT", "/v2/{repo}/blobs/uploads/{upload}?digest=sha256:1", 400, "DIGEST_INVALID"),
    Case("monolithic bad digest", "POST", f"/v2/{REPO}/blobs/uploads/?digest=nope", 400, "DIGEST_INVALID", {}, b"x"),
    Case(
        "monolithic wrong digest",
        "POST",
        f"/v2/{REPO}/blobs/uploads/?digest={UNKNOWN_DIGEST}",
        400,
        "DIGEST_INVALID",
        {},
        b"x",
    ),
    Case("mount bad digest", "POST", f"/v2/{REPO}/blobs/uploads/?mount=bad&from=a/b", 400, "DIGEST_INVALID"),
    Case("negative n", "GET", "/v2/{repo}/tags/list?n=-1", 400, PLAIN),
    Case("word n", "GET", "/v2/_catalog?n=ten", 400, PLAIN),
    Case("unicode digit n", "GET", "/v2/_catalog?n=%C2%B2", 400, PLAIN),
    Case("referrers of a non-digest", "GET", "/v2/{repo}/referrers/latest", 400, "DIGEST_INVALID"),
    Case("referrers sha512 of sha256 length", "GET", "/v2/{repo}/referrers/sha512:" + "a" * 64, 400, "DIGEST_INVALID"),
    Case("referrers of an unknown algorithm", "GET", "/v2/{repo}/referrers/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
    Case("unknown endpoint", "GET", "/v2/some/repo/nothing", 404, PLAIN),
    Case("outside the api", "GET", "/etc/passwd", 404, PLAIN),
    Case("wrong method", "POST", "/v2/{repo}/manifests/latest", 405, "UNSUPPORTED"),
    Case("wrong method on catalog", "DELETE", "/v2/_catalog", 405, "UNSUPPORTED"),
]


@pytest.fixture(scope="module")
def seeded(cargohold: Cargohold) -> dict[str, str]:
    """A repository with a tagged image, a 1000-byte blob and an open upload session."""
    with httpx.Client(base_url=cargohold.url) as c:
        push_image(c, REPO, make_image(), "v1")
        blob = push_blob(c, REPO, os.urandom(1000))
        location = c.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
    return {"repo": REPO, "blob": blob, "upload": location.rsplit("/", 1)[1]}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request(cargohold: Cargohold, seeded: dict[str, str], case: Case) -> None:
    path = case.path.format(**seeded)
    with httpx.Client(base_url=cargohold.url) as c:
        response = c.request(case.method, path, headers=case.headers, content=case.body)
    assert response.status_code == case.status, response.text
    if case.code == PLAIN:
        assert response.headers["content-type"].startswith("text/plain"), response.text
        message = response.text.strip()
        assert message and len(message) < 600 and "errors" not in message
    elif case.code is not None:
        body = response.json()
        assert body["errors"][0]["code"] == case.code
        message = body["errors"][0]["message"]
        assert message and len(message) < 600, "the message should be short and present"
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_nothing_partial_after_bad_input(cargohold: Cargohold, seeded: dict[str, str]) -> None:
    for case in CASES:
        with httpx.Client(base_url=cargohold.url) as c:
            c.request(case.method, case.path.format(**seeded), headers=case.headers, content=case.body)
    assert_store_consistent(cargohold.data)


def _send_partial(host: str, port: int, head: str, sent: bytes) -> None:
    """Send request headers and part of the promised body, then drop the connection."""
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head.encode() + sent)
        time.sleep(0.2)


def test_client_disconnect_mid_monolithic_upload(fresh_cargohold: Cargohold) -> None:
    data = os.urandom(1 << 20)
    head = (
        f"POST /v2/cut/mono/blobs/uploads/?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    _send_partial("127.0.0.1", fresh_cargohold.port, head, data[:300_000])
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        deadline = time.monotonic() + 5
        while any((fresh_cargohold.data / "uploads").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.head(f"/v2/cut/mono/blobs/{sha256(data)}").status_code == 404
    assert not any((fresh_cargohold.data / "uploads").iterdir()), "a cut monolithic upload leaves no session"
    assert_store_consistent(fresh_cargohold.data)


def test_client_disconnect_mid_chunk_discards_the_cut_chunk(fresh_cargohold: Cargohold) -> None:
    """A chunk the client was never told had arrived is not kept: the session stays at the end
    of the last acknowledged chunk, and the client resumes from there."""
    data = os.urandom(1 << 20)
    acknowledged = 1000
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        location = c.post("/v2/cut/chunk/blobs/uploads/").headers["location"]
        assert c.patch(location, content=data[:acknowledged]).status_code == 202
        head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data) - acknowledged}\r\n\r\n"
        _send_partial("127.0.0.1", fresh_cargohold.port, head, data[acknowledged:400_000])
        assert c.get(location).headers["range"] == f"0-{acknowledged - 1}"
        assert c.head(f"/v2/cut/chunk/blobs/{sha256(data)}").status_code == 404
        # The client resumes from the offset the registry reports.
        rest = {"content-range": f"{acknowledged}-{len(data) - 1}"}
        assert c.patch(location, content=data[acknowledged:], headers=rest).status_code == 202
        done = c.put(f"{location}?digest={sha256(data)}")
        assert done.status_code == 201
        assert c.get(f"/v2/cut/chunk/blobs/{sha256(data)}").content == data
    assert_store_consistent(fresh_cargohold.data)


def test_truncated_manifest_body_is_not_stored(fresh_cargohold: Cargohold) -> None:
    manifest = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []})
    head = (
        f"PUT /v2/cut/manifest/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: {OCI_MANIFEST}\r\n"
        f"Content-Length: {len(manifest) + 100}\r\n\r\n"
    )
    _send_partial("127.0.0.1", fresh_cargohold.port, head, manifest)
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        assert c.get("/v2/cut/manifest/manifests/v1").status_code == 404
    assert "Traceback" not in fresh_cargohold.log_text()


def test_access_log_cannot_be_forged(cargohold: Cargohold) -> None:
    with httpx.Client(base_url=cargohold.url) as c:
        c.get("/v2/a%0A2026-01-01 00:00:00 access[1] 6.6.6.6 forged/tags/list")
    wait_until(lambda: "\\x0a2026-01-01" in cargohold.log_text(), "the access line is written")
    lines = cargohold.log_text().splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert any("\\x0a2026-01-01" in line for line in lines)
