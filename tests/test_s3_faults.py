"""The object store going away mid-push: a TCP proxy in front of the S3 server (moto, or
radosgw) resets every connection, open and new, as a dead or partitioned S3 endpoint would.
Requests that need the bucket get 503 UNAVAILABLE with Retry-After, never a 500; what needs only
the database (manifests, tags, the catalog) still answers; nothing half-written becomes visible;
and once the store is back the client's retry of the same chunk completes the push."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.oci import error_code, make_image, push_image, sha256, with_query
from tests.support.proxies import CuttingProxy
from tests.support.s3 import S3Server
from tests.support.servers import Cargohold


@pytest.fixture
def behind_proxy(s3: S3Server, tmp_path: Path) -> Iterator[tuple[Cargohold, CuttingProxy]]:
    proxy = CuttingProxy(s3.port).start()
    env = {
        **s3.environment(),
        "CARGOHOLD_S3_ENDPOINT": f"http://{proxy.host}",
        "CARGOHOLD_BLOB_STORE": f"s3://{s3.create_bucket()}",
        "CARGOHOLD_S3_TIMEOUT": "1s",
    }
    server = Cargohold(tmp_path / "registry", extra_env=env).start()
    try:
        yield server, proxy
    finally:
        server.stop()
        proxy.stop()


def assert_unavailable(response_status: int, headers: dict[str, str], body: dict[str, object], what: str) -> None:
    assert response_status == 503, f"{what}: {response_status} {body}"
    assert int(headers["retry-after"]) > 0, what
    assert body["errors"][0]["code"] == "UNAVAILABLE", what  # type: ignore[index]
    assert "object store" in body["errors"][0]["message"], what  # type: ignore[index]


def test_the_object_store_down_mid_push(behind_proxy: tuple[Cargohold, CuttingProxy]) -> None:
    server, proxy = behind_proxy
    image = make_image(layer_size=100_000)
    first, second = os.urandom(6 << 20), os.urandom(3 << 20)
    blob = first + second
    with server.client() as c:
        assert push_image(c, "team/app", image, "v1").status_code == 201
        begun = c.post("/v2/team/new/blobs/uploads/")
        sent = c.patch(begun.headers["location"], content=first, headers={"content-range": f"0-{len(first) - 1}"})
        assert sent.status_code == 202, sent.text
        location = sent.headers["location"]

        proxy.go_down()
        chunk = {"content-range": f"{len(first)}-{len(blob) - 1}"}
        refused = c.patch(location, content=second, headers=chunk)
        assert_unavailable(refused.status_code, dict(refused.headers), refused.json(), "PATCH while the store is down")
        whole = c.post(with_query("/v2/team/new/blobs/uploads/", digest=sha256(b"monolithic")), content=b"monolithic")
        assert_unavailable(whole.status_code, dict(whole.headers), whole.json(), "monolithic push")
        layer = c.get(f"/v2/team/app/blobs/{sha256(image.layers[0])}")
        assert_unavailable(layer.status_code, dict(layer.headers), layer.json(), "blob GET")
        # What lives in the database is still served.
        assert c.get("/v2/").status_code == 200
        assert c.get("/v2/team/app/manifests/v1").content == image.manifest
        assert c.get("/v2/team/app/tags/list").json()["tags"] == ["v1"]
        assert "team/app" in c.get("/v2/_catalog").json()["repositories"]

        proxy.come_back()
        status = c.get(location)
        assert status.status_code == 204 and status.headers["range"] == f"0-{len(first) - 1}", (
            "the refused chunk left nothing behind"
        )
        again = c.patch(location, content=second, headers=chunk)
        assert again.status_code == 202, again.text
        done = c.put(with_query(again.headers["location"], digest=sha256(blob)))
        assert done.status_code == 201, done.text
        assert c.get(f"/v2/team/new/blobs/{sha256(blob)}").content == blob
        missing = c.get(f"/v2/team/new/blobs/{sha256(b'monolithic')}")
        assert missing.status_code == 404 and error_code(missing) == "BLOB_UNKNOWN", "the refused push left no blob"
        assert c.get(f"/v2/team/app/blobs/{sha256(image.layers[0])}").content == image.layers[0]
    log = server.log_text()
    assert "Traceback" not in log and '" 500 ' not in log


def test_a_hung_object_store_answers_503_in_seconds(behind_proxy: tuple[Cargohold, CuttingProxy]) -> None:
    """Connections accepted, nothing answered: each call gives up after `s3_timeout`."""
    server, proxy = behind_proxy
    data = os.urandom(1 << 20)
    with server.client() as c:
        begun = c.post("/v2/team/slow/blobs/uploads/")
        assert begun.status_code == 202
        proxy.stall()
        started = time.monotonic()
        refused = c.put(with_query(begun.headers["location"], digest=sha256(data)), content=data)
        waited = time.monotonic() - started
        assert_unavailable(refused.status_code, dict(refused.headers), refused.json(), "PUT to a hung store")
        assert waited < 15, f"answered after {waited:.1f}s"
        proxy.come_back()
        whole = c.post(with_query("/v2/team/slow/blobs/uploads/", digest=sha256(data)), content=data)
        assert whole.status_code == 201, whole.text
        assert c.get(f"/v2/team/slow/blobs/{sha256(data)}").content == data
