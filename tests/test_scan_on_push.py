"""Scan on push, end to end: a real registry with `scan_on_push`, images pushed by cargohold's
client, the advisory database filled by `cargohold vulndb import` while the registry runs, and
the results read from the management API; verdicts that follow the database; a scan worker
killed mid-job that loses nothing."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.cli import cargohold as cli
from tests.support.images import alpine_image, debian_image
from tests.support.layerbuild import LayerBuilder
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, canonical, descriptor, image_of, push_image
from tests.support.postgres import PostgresServer
from tests.support.servers import Cargohold
from tests.support.waiting import wait_until

# Real images (built once per clone, cached), servers, kill -9: not in the fast lane.
pytestmark = pytest.mark.slow

URLLIB3 = {
    "id": "PYSEC-2021-108",
    "modified": "2026-11-01T00:00:00Z",
    "aliases": ["CVE-2021-33503", "GHSA-q2q7-5pp4-w6pg"],
    "summary": "urllib3 catastrophic backtracking in URL authority parsing",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "urllib3", "purl": "pkg:pypi/urllib3"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.25.4"}, {"fixed": "1.26.5"}]}],
        }
    ],
}
LODASH = {
    "id": "GHSA-35jh-r3h4-6jhm",
    "modified": "2026-11-01T00:00:00Z",
    "aliases": ["CVE-2021-23337"],
    "summary": "Command Injection in lodash",
    "database_specific": {"severity": "HIGH"},
    "affected": [
        {
            "package": {"ecosystem": "npm", "name": "lodash"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}],
        }
    ],
}


def import_records(server: Cargohold, tmp_path: Path, *records: dict[str, Any]) -> str:
    path = tmp_path / f"advisories-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(list(records)))
    done = cli("vulndb", "import", "--data", str(server.data), str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout


def push(reference: str, server: Cargohold, repo: str) -> None:
    done = cli("copy", reference, f"{server.host}/{repo}")
    assert done.returncode == 0, done.stderr


def scan_of(server: Cargohold, repo: str, reference: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/v1/repositories/{repo}/manifests/{reference}/scan", timeout=30)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def settled(server: Cargohold, repo: str, reference: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def check() -> bool:
        found.clear()
        found.update(scan_of(server, repo, reference))
        return ready(found)

    wait_until(check, f"the scan of {repo}:{reference} as expected", timeout=120, poll=0.5)
    return dict(found)


def ids(result: dict[str, Any]) -> set[tuple[str, str]]:
    return {(v["id"], v["package"]) for v in result["vulnerabilities"]}


def test_pushed_images_are_scanned_and_their_verdicts_follow_the_database(
    cargohold_with: Callable[[dict[str, str]], Cargohold], tmp_path: Path
) -> None:
    server = cargohold_with({"CARGOHOLD_SCAN_ON_PUSH": "team/*"})
    import_records(server, tmp_path, URLLIB3)
    debian, alpine = debian_image(), alpine_image()
    push(debian.reference, server, "team/app:v1")
    push(alpine.reference, server, "team/base:3.19")
    push(debian_image(clean=True).reference, server, "other/app:v1")  # another image: results are per digest

    web = settled(server, "team/app", "v1", lambda r: r["status"] == "ok" and not r["queued"])
    assert web["digest"] == debian.digest
    assert web["packages"] == len(debian.components)
    assert ("PYSEC-2021-108", "urllib3") in ids(web)
    assert web["summary"]["HIGH"] >= 1
    lint_ids = {finding["id"] for finding in web["lint"]}
    assert {"CH001", "CH002", "CH005", "CH008", "CH009"} <= lint_ids, "root, no healthcheck, a key file, modes"
    base = settled(server, "team/base", "3.19", lambda r: r["status"] == "ok" and not r["queued"])
    assert base["vulnerabilities"] == []
    assert scan_of(server, "other/app", "v1")["status"] == "not scanned", "only the configured repositories"

    # Added while the registry runs: the npm advisory concerns the Debian image only.
    output = import_records(server, tmp_path, LODASH)
    assert "1 image(s) queued for re-evaluation" in output
    web = settled(server, "team/app", "v1", lambda r: ("GHSA-35jh-r3h4-6jhm", "lodash") in ids(r) and not r["queued"])
    assert web["advisoryGeneration"] == 2
    assert scan_of(server, "team/base", "3.19") == base, "the other image's result is untouched"

    # Given a fix below the installed version, then withdrawn: each time the verdict follows.
    fixed_earlier = {**URLLIB3, "modified": "2026-11-10T00:00:00Z"}
    fixed_earlier["affected"] = [
        {
            **URLLIB3["affected"][0],
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.26.0"}]}],
        }  # type: ignore[index]
    ]
    import_records(server, tmp_path, fixed_earlier)
    web = settled(server, "team/app", "v1", lambda r: ("PYSEC-2021-108", "urllib3") not in ids(r))
    withdrawn = {**LODASH, "modified": "2026-11-11T00:00:00Z", "withdrawn": "2026-11-11T00:00:00Z"}
    import_records(server, tmp_path, withdrawn)
    web = settled(server, "team/app", "v1", lambda r: r["vulnerabilities"] == [] and not r["queued"])
    assert scan_of(server, "team/base", "3.19") == base

    state = httpx.get(f"{server.url}/api/v1/vulndb", timeout=10).json()
    assert (state["advisories"], state["withdrawn"]) == (2, 1)
    missing = httpx.get(f"{server.url}/api/v1/repositories/team/app/manifests/v9/scan", timeout=10)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def _slow_layer(files: int) -> bytes:
    """A layer whose scan takes seconds (text files the lint reads for secrets), small to push."""
    text = b"nothing to see here, only a long configuration line of no secret\n" * 16000  # ~1 MiB
    layer = LayerBuilder()
    for index in range(files):
        layer.file(f"app/config-{index}.conf", text)
    return gzip.compress(layer.tar(), compresslevel=1)


def _push_image(client: httpx.Client, repo: str, layer: bytes) -> str:
    config = canonical({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    response = push_image(client, repo, image_of(config, [layer]), "v1")
    return str(response.headers["docker-content-digest"])


def _scan_worker(server: Cargohold, other_than: int | None = None) -> psutil.Process:
    """The scan worker `serve` runs beside its workers (under its supervisor, `cargohold.sidecar`)."""
    assert server.process is not None
    found: list[psutil.Process] = []

    def running() -> bool:
        children = psutil.Process(server.process.pid).children(recursive=True)  # type: ignore[union-attr]
        found[:] = [
            p
            for p in children
            if "scan-worker" in p.cmdline() and "cargohold.sidecar" not in p.cmdline() and p.pid != other_than
        ]
        return bool(found)

    wait_until(running, "the scan worker runs", timeout=30)
    return found[0]


def test_a_scan_worker_killed_mid_job_loses_nothing(cargohold_with: Callable[[dict[str, str]], Cargohold]) -> None:
    server = cargohold_with({"CARGOHOLD_SCAN_ON_PUSH": "*", "CARGOHOLD_SCAN_LEASE": "3s"})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        digest = _push_image(client, "team/big", _slow_layer(200))
    worker = _scan_worker(server)
    database = server.data / "metadata.sqlite3"

    def leased() -> bool:
        with sqlite3.connect(database) as db:
            row = db.execute("SELECT worker FROM scan_job WHERE digest = ?", (digest,)).fetchone()
        return bool(row and row[0])

    wait_until(leased, "the worker took the job", timeout=30)
    os.kill(worker.pid, signal.SIGKILL)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT attempts FROM scan_job WHERE digest = ?", (digest,)).fetchone() == (1,), (
            "killed mid-job: the job is still there, leased"
        )
    result = settled(server, "team/big", "v1", lambda r: r["status"] == "ok" and not r["queued"])
    assert result["digest"] == digest and result["packages"] == 0
    _scan_worker(server, other_than=worker.pid)  # serve started another, which finished the job
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM scan_job").fetchone()[0] == 0


def test_scan_on_push_on_postgresql(
    cargohold_with: Callable[[dict[str, str]], Cargohold], postgres: PostgresServer, tmp_path: Path
) -> None:
    """The queue, the worker and the advisory database on PostgreSQL, as a fleet runs them."""
    url = postgres.create_database()
    server = cargohold_with({"CARGOHOLD_SCAN_ON_PUSH": "team/*", "CARGOHOLD_DATABASE": url})
    records = tmp_path / "records.json"
    records.write_text(json.dumps([LODASH]))
    imported = cli(
        "vulndb", "import", "--data", str(server.data), "--config", str(_config(tmp_path, url)), str(records)
    )
    assert imported.returncode == 0, imported.stderr
    debian = debian_image()
    push(debian.reference, server, "team/app:v1")
    web = settled(server, "team/app", "v1", lambda r: r["status"] == "ok" and not r["queued"])
    assert ("GHSA-35jh-r3h4-6jhm", "lodash") in ids(web)
    assert web["packages"] == len(debian.components)


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "cargohold.yaml"
    path.write_text(f"database: {url}\n")
    return path


def test_an_image_that_cannot_be_read_gets_an_error_result_at_once(
    cargohold_with: Callable[[dict[str, str]], Cargohold],
) -> None:
    server = cargohold_with({"CARGOHOLD_SCAN_ON_PUSH": "*"})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        digest = _push_image(client, "team/broken", gzip.compress(b"not a tar archive at all, only gzip" * 50))
    result = settled(server, "team/broken", "v1", lambda r: r["status"] == "error" and not r["queued"])
    assert result["digest"] == digest
    assert "not a tar archive" in result["error"], result["error"]


def test_a_killed_server_leaves_no_scan_worker_behind(cargohold_with: Callable[[dict[str, str]], Cargohold]) -> None:
    server = cargohold_with({"CARGOHOLD_SCAN_ON_PUSH": "*"})
    worker = _scan_worker(server)
    supervisor = worker.parent()
    assert supervisor is not None and "cargohold.sidecar" in supervisor.cmdline()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)  # the server alone: its group is not signalled
    server.process.wait(10)

    def gone() -> bool:
        return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in (worker, supervisor))

    wait_until(gone, "the supervisor and the worker exit once the server is gone", timeout=20)


def test_each_image_of_a_pushed_index_is_scanned(
    cargohold_with: Callable[[dict[str, str]], Cargohold], tmp_path: Path
) -> None:
    server = cargohold_with({"CARGOHOLD_SCAN_ON_PUSH": "team/*"})
    import_records(server, tmp_path, URLLIB3)
    children = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for architecture, version in (("amd64", "1.26.4"), ("arm64", "1.26.5")):
            metadata = f"Metadata-Version: 2.1\nName: urllib3\nVersion: {version}\n"
            layer = LayerBuilder().file(f"usr/lib/python3/dist-packages/urllib3-{version}.dist-info/METADATA", metadata)
            config = canonical({"architecture": architecture, "os": "linux", "rootfs": {"type": "layers"}})
            image = image_of(config, [gzip.compress(layer.tar())])
            push_image(client, "team/multi", image, image.digest)
            children.append(
                {**descriptor(OCI_MANIFEST, image.manifest), "platform": {"architecture": architecture, "os": "linux"}}
            )
        index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
        response = client.put("/v2/team/multi/manifests/v1", content=index, headers={"content-type": OCI_INDEX})
        assert response.status_code == 201, response.text

    def both_scanned(result: dict[str, Any]) -> bool:
        return all(m["status"] == "ok" and not m["queued"] for m in result["manifests"])

    result = settled(server, "team/multi", "v1", both_scanned)
    by_platform = {m["platform"]["architecture"]: ids(m) for m in result["manifests"]}
    assert by_platform == {"amd64": {("PYSEC-2021-108", "urllib3")}, "arm64": set()}, "1.26.5 has the fix"
