"""Quotas on unique stored bytes, per repository and per namespace, enforced where bytes land."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.inprocess import InProcessRegistry
from tests.support.oci import OCI_MANIFEST, canonical, descriptor, error_code, sha256, with_query
from tests.support.store import assert_store_consistent

KIB = 1024
QUOTAS = [{"repositories": "small/*", "limit": "100KiB"}, {"namespace": "team", "limit": "150KiB"}]


@pytest.fixture
def limited(registry_app_with: Callable[[dict[str, str]], InProcessRegistry]) -> InProcessRegistry:
    return registry_app_with({"CARGOHOLD_QUOTAS": json.dumps(QUOTAS)})


def upload(c: httpx.Client, repo: str, data: bytes) -> httpx.Response:
    location = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    return c.put(with_query(location, digest=sha256(data)), content=data)


def test_repository_quota(limited: InProcessRegistry) -> None:
    first, second = os.urandom(60 * KIB), os.urandom(60 * KIB)
    with limited.client() as c:
        assert upload(c, "small/app", first).status_code == 201
        # The same blob again counts once.
        assert upload(c, "small/app", first).status_code == 201
        refused = upload(c, "small/app", second)
        assert refused.status_code == 403
        assert error_code(refused) == "DENIED"
        message = refused.json()["errors"][0]["message"]
        assert "quota exceeded: repository small/app would hold 120.0 KiB of its 100.0 KiB quota" in message
        assert c.head(f"/v2/small/app/blobs/{sha256(second)}").status_code == 404
        # Another repository under the same pattern has a quota of its own.
        assert upload(c, "small/other", second).status_code == 201
        # A single-request upload is refused the same way, and leaves nothing.
        single = c.post("/v2/small/app/blobs/uploads/", params={"digest": sha256(second)}, content=second)
        assert single.status_code == 403
    assert_store_consistent(limited.data)
    assert not any((limited.data / "uploads").iterdir())


def test_namespace_quota_counts_shared_blobs_once(limited: InProcessRegistry) -> None:
    shared, extra, more = os.urandom(70 * KIB), os.urandom(70 * KIB), os.urandom(20 * KIB)
    with limited.client() as c:
        assert upload(c, "team/a", shared).status_code == 201
        # Mounting (or pushing) the same blob into a sibling repository adds nothing to the namespace.
        mounted = c.post("/v2/team/b/blobs/uploads/", params={"mount": sha256(shared), "from": "team/a"})
        assert mounted.status_code == 201
        assert upload(c, "team/b", extra).status_code == 201
        refused = upload(c, "team/c", more)
        assert refused.status_code == 403
        assert "namespace team" in refused.json()["errors"][0]["message"]
        assert upload(c, "elsewhere/c", more).status_code == 201


def test_over_quota_repository_refuses_new_uploads_and_manifests(limited: InProcessRegistry, tmp_path: Path) -> None:
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(90 * KIB)
    with limited.client() as c:
        assert upload(c, "small/full", config).status_code == 201
        assert upload(c, "small/full", layer).status_code == 201
    # The operator lowers the quota below what the repository already holds.
    lowered = [{"repositories": "small/*", "limit": "50KiB"}]
    limited.stop()
    limited.extra_env["CARGOHOLD_QUOTAS"] = json.dumps(lowered)
    limited.start()
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        }
    )
    with limited.client() as c:
        pushed = c.put("/v2/small/full/manifests/v1", content=manifest, headers={"content-type": OCI_MANIFEST})
        assert pushed.status_code == 403
        assert "holds 90.0 KiB, over its 50.0 KiB quota" in pushed.json()["errors"][0]["message"]
        started = c.post("/v2/small/full/blobs/uploads/")
        assert started.status_code == 403
        assert "no upload was started" in started.json()["errors"][0]["message"]
        # Reads still work.
        assert c.get(f"/v2/small/full/blobs/{sha256(layer)}").content == layer
    shown = subprocess.run(
        [sys.executable, "-m", "cargohold", "usage", "--data", str(limited.data), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CARGOHOLD_QUOTAS": json.dumps(lowered)},
    )
    assert shown.returncode == 0, shown.stderr
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert rows["small/full"]["bytes"] == len(config) + len(layer)
    assert rows["small/full"]["quota"] == 50 * KIB
