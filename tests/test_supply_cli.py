"""`cargohold scan`, `lint` and `vulndb` as a user runs them, on the real test images (OCI layouts
built by tests/support/images.py): every output format, ignores and thresholds with their exit
codes, the database's age, and one clear line for what cannot be read."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.support.cli import cargohold as cli
from tests.support.images import BuiltImage, debian_image

# Real images (built once per clone, cached), servers, kill -9: not in the fast lane.
pytestmark = pytest.mark.slow

RECORDS: list[dict[str, Any]] = [
    {
        "id": "PYSEC-2021-108",
        "modified": "2026-11-01T00:00:00Z",
        "aliases": ["CVE-2021-33503"],
        "summary": "urllib3 catastrophic backtracking in URL authority parsing",
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "urllib3"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.25.4"}, {"fixed": "1.26.5"}]}],
            }
        ],
    },
    {
        "id": "GHSA-vh95-rmgr-6w4m",
        "modified": "2026-11-01T00:00:00Z",
        "aliases": ["CVE-2020-7598"],
        "summary": "Prototype Pollution in minimist",
        "database_specific": {"severity": "MODERATE"},
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": "minimist"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.2.1"}]}],
            }
        ],
    },
    {
        "id": "DEBIAN-CVE-2099-0001",
        "modified": "2026-11-01T00:00:00Z",
        "summary": "glibc: a flaw in every version before one not yet released",
        "affected": [
            {
                "package": {"ecosystem": "Debian:12", "name": "glibc"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u999"}]}],
                "ecosystem_specific": {"urgency": "low"},
            }
        ],
    },
    {
        "id": "DEBIAN-CVE-2099-0002",
        "modified": "2026-11-01T00:00:00Z",
        "summary": "glibc: fixed long ago",
        "affected": [
            {
                "package": {"ecosystem": "Debian:12", "name": "glibc"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.28-1"}]}],
            }
        ],
    },
]


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    return debian_image()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("vulndb")
    records = where / "records.json"
    records.write_text(json.dumps(RECORDS))
    done = cli("vulndb", "import", "--data", str(where / "data"), str(records))
    assert done.returncode == 0, done.stderr
    assert "4 added" in done.stdout
    return where / "data"


def scan(image: BuiltImage, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("scan", "--data", str(data), *args, image.reference)


def test_scan_json_finds_what_the_database_says_in_each_ecosystem(image: BuiltImage, data: Path) -> None:
    done = scan(image, data, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    found = {(v["id"], v["package"], v["version"], v["severity"]) for v in report["vulnerabilities"]}
    libc = next(c for c in image.of_type("deb") if c.name == "libc6")
    assert found >= {
        ("PYSEC-2021-108", "urllib3", "1.26.4", "HIGH"),
        ("GHSA-vh95-rmgr-6w4m", "minimist", "0.0.10", "MEDIUM"),
        ("DEBIAN-CVE-2099-0001", "libc6", libc.version, "LOW"),
    }
    assert not any(v["id"] == "DEBIAN-CVE-2099-0002" for v in report["vulnerabilities"]), "fixed before 2.36"
    minimist = [v["version"] for v in report["vulnerabilities"] if v["package"] == "minimist"]
    assert minimist == ["0.0.10"], "minimist 1.2.5 is past the fix, the nested 0.0.10 is not"
    urllib3 = next(v for v in report["vulnerabilities"] if v["package"] == "urllib3")
    assert urllib3["fixed"] == ["1.26.5"] and urllib3["aliases"] == ["CVE-2021-33503"]
    assert urllib3["layer"] == image.layers[2], "the pip layer"
    assert report["packages"] == len(image.components)
    assert report["database"]["advisories"] == 4
    assert "stale" in done.stderr, "the newest advisory is weeks old: the warning says so"


def test_ignore_by_id_or_alias_and_fail_on_thresholds(image: BuiltImage, data: Path) -> None:
    done = scan(image, data, "--format", "json", "--ignore", "CVE-2021-33503", "--ignore", "GHSA-vh95-rmgr-6w4m")
    report = json.loads(done.stdout)
    assert {v["id"] for v in report["ignored"]} == {"PYSEC-2021-108", "GHSA-vh95-rmgr-6w4m"}
    assert {v["id"] for v in report["vulnerabilities"]} == {"DEBIAN-CVE-2099-0001"}

    high = scan(image, data, "--fail-on", "high")
    assert high.returncode == 1
    assert "1 vulnerability at HIGH or worse" in high.stderr
    assert "PYSEC-2021-108" in high.stdout and "1.26.5" in high.stdout, "the table still printed"
    assert scan(image, data, "--fail-on", "critical").returncode == 0
    assert scan(image, data, "--fail-on", "high", "--ignore", "PYSEC-2021-108").returncode == 0


def test_sarif_and_cyclonedx_reports(image: BuiltImage, data: Path) -> None:
    sarif = json.loads(scan(image, data, "--format", "sarif").stdout)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    rules = {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    assert rules == {result["ruleId"] for result in run["results"]} >= {"PYSEC-2021-108"}
    levels = {result["ruleId"]: result["level"] for result in run["results"]}
    assert levels["PYSEC-2021-108"] == "error" and levels["GHSA-vh95-rmgr-6w4m"] == "warning"

    document = scan(image, data, "--format", "cyclonedx").stdout
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    bom = json.loads(document)
    refs = {component["bom-ref"]: component for component in bom["components"]}
    vulnerabilities = {v["id"]: v for v in bom["vulnerabilities"]}
    affected = [refs[target["ref"]]["name"] for target in vulnerabilities["PYSEC-2021-108"]["affects"]]
    assert affected == ["urllib3"]
    assert vulnerabilities["PYSEC-2021-108"]["ratings"][0]["severity"] == "high"


def test_an_empty_database_is_said_to_be_empty(image: BuiltImage, tmp_path: Path) -> None:
    nothing = cli("vulndb", "status", "--data", str(tmp_path / "none"))
    assert nothing.returncode == 1 and "no registry data" in nothing.stderr
    empty = tmp_path / "empty"
    made = cli("vulndb", "import", "--data", str(empty), str(_write(tmp_path / "none.json", [])))
    assert made.returncode == 0, made.stderr
    done = scan(image, empty, "--format", "json")
    assert done.returncode == 0
    assert "the advisory database is empty" in done.stderr
    assert json.loads(done.stdout)["vulnerabilities"] == []


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_lint_reports_the_lint_image_and_passes_the_clean_one(image: BuiltImage) -> None:
    done = cli("lint", "--format", "json", image.reference)
    assert done.returncode == 0, done.stderr
    findings = json.loads(done.stdout)["findings"]
    by_id = {finding["id"] for finding in findings}
    assert {"CH001", "CH002", "CH005", "CH008", "CH009"} <= by_id
    key_file = next(f for f in findings if f["id"] == "CH005")
    assert key_file["location"].endswith(image.lint.private_keys[0])
    assert "PRIVATE KEY-----\n" not in done.stdout, "no secret in the output"
    assert cli("lint", "--fail-on", "high", image.reference).returncode == 1

    clean = debian_image(clean=True)
    quiet = cli("lint", "--format", "json", clean.reference)
    assert not {"CH001", "CH002", "CH005", "CH008"} & {f["id"] for f in json.loads(quiet.stdout)["findings"]}


def test_what_cannot_be_read_is_one_clear_line(image: BuiltImage, data: Path, tmp_path: Path) -> None:
    missing = cli("sbom", "oci:/nonexistent/layout:v1")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1

    # A layout whose top layer is not a tar (its digest correct): the layer is named.
    broken = tmp_path / "broken"
    shutil.copytree(image.layout, broken)
    garbage = b"this is no tar archive, compressed or not" * 100
    _replace_top_layer(broken, image.tag, garbage)
    done = cli("scan", "--data", str(data), f"oci:{broken}:{image.tag}")
    assert done.returncode == 1
    assert "not a tar archive" in done.stderr and "Traceback" not in done.stderr

    # A layer whose bytes are not what its digest says: the integrity error, not a parse error.
    tampered = tmp_path / "tampered"
    shutil.copytree(image.layout, tampered)
    blob = tampered / "blobs" / "sha256" / image.layers[-1].split(":", 1)[1]
    blob.write_bytes(blob.read_bytes()[:-100] + b"\0" * 100)
    done = cli("sbom", f"oci:{tampered}:{image.tag}")
    assert done.returncode == 1 and "other content" in done.stderr, done.stderr


def _replace_top_layer(layout: Path, tag: str, data: bytes) -> None:
    """Rewrite the image `tag` of `layout` with its top layer replaced, digests kept honest."""
    blobs = layout / "blobs" / "sha256"

    def put(content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        (blobs / digest).write_bytes(content)
        return f"sha256:{digest}"

    index = json.loads((layout / "index.json").read_text())
    entry = next(
        m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )
    manifest = json.loads((blobs / entry["digest"].split(":", 1)[1]).read_bytes())
    manifest["layers"][-1].update(digest=put(data), size=len(data))
    payload = json.dumps(manifest).encode()
    entry.update(digest=put(payload), size=len(payload))
    (layout / "index.json").write_text(json.dumps(index))
