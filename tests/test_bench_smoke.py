"""Smoke run of bench/registry_bench.py: it measures both registries end to end (speed is not asserted)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.servers import require_tool

# Real engines, kill -9 loops or whole benchmark runs: not in the fast lane (make test-fast).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "registry_bench.py"
REGISTRIES = ["cargohold", "docker-registry"]

# One key per figure the benchmark promises: a figure missing for either registry fails the test.
EXPECTED_FIGURES = [
    "upload_monolithic_MBps",
    "upload_chunked_MBps",
    "download_MBps",
    *(
        f"manifest_{method}_c{conns}_{what}"
        for method in ("get", "head")
        for conns in (1, 16, 64)
        for what in ("rps", "p99_ms", "errors")
    ),
    "concurrent_upload_MBps",
    "concurrent_upload_peak_pss_MB",
    "concurrent_upload_peak_rss_MB",
    "peak_pss_MB",
    "peak_rss_MB",
    "tag_create_per_s",
    "tags_list_ms",
    "tags_page_ms",
    "tags_page_items",
]


def test_help_exits_zero() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--target" in done.stdout


def test_quick_run_measures_every_figure_for_both_registries(tmp_path: Path) -> None:
    require_tool("docker-registry")
    require_tool("wrk")
    report = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    data = json.loads(report.read_text())
    assert list(data["targets"]) == REGISTRIES
    assert {f["key"] for f in data["figures"]} == set(EXPECTED_FIGURES)
    for name in REGISTRIES:
        target = data["targets"][name]
        assert target["errors"] == [], target["errors"]
        missing = [key for key in EXPECTED_FIGURES if target["figures"].get(key) is None]
        assert not missing, f"{name} lacks {missing}"
    ratios = {row["key"]: row["ratio"] for row in data["comparison"]["rows"]}
    assert ratios["upload_monolithic_MBps"] is not None and ratios["manifest_head_c64_rps"] is not None
    # The servers the benchmark started are gone once it exits.
    for name in REGISTRIES:
        pid = data["targets"][name]["pid"]
        assert pid is not None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


GC_BENCH = ROOT / "bench" / "gc_bench.py"
GC_RACE = ROOT / "bench" / "gc_race.py"
CLIENT_BENCH = ROOT / "bench" / "client_bench.py"


@pytest.mark.parametrize("mode", ["loop", "serve"])
def test_pull_under_gc_quick_run(tmp_path: Path, mode: str) -> None:
    report = tmp_path / "pull.json"
    done = subprocess.run(
        [sys.executable, str(GC_BENCH), "--pull-under-gc", "--quick", "--gc-mode", mode, "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    data = json.loads(report.read_text())
    assert len(data["without_gc"]) == len(data["with_gc"]) == data["rounds"] == 1
    assert data["errors"] == 0, "pulls failed while GC ran"
    for window in data["without_gc"] + data["with_gc"]:
        assert window["images_per_s"] > 0
    assert data["ratio"] > 0 and data["gc_mode"] == mode
    assert "ratio" in done.stdout


def test_gc_race_small_run_reports_both_registries(tmp_path: Path) -> None:
    require_tool("docker-registry")
    require_tool("skopeo")
    report = tmp_path / "race.json"
    done = subprocess.run(
        [sys.executable, str(GC_RACE), "--images", "24", "--gc-pause", "0.5", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    results = {r["registry"]: r for r in json.loads(report.read_text())["results"]}
    assert set(results) == set(REGISTRIES)
    ours = results["cargohold"]
    assert (ours["pushed"], ours["images_failing"], ours["unreferenced_blobs"]) == (24, 0, 0)
    # The reference's losses depend on timing: reported, not asserted.
    assert results["docker-registry"]["gc_runs"] > 0
    assert "images failing to pull" in done.stdout


def test_auth_bench_quick_run(tmp_path: Path) -> None:
    """bench/auth_bench.py measures HEAD with auth off, bearer and basic, without errors."""
    report = tmp_path / "auth.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "auth_bench.py"), "--quick", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(report.read_text())
    assert set(figures["rps"]) == {"off", "bearer", "basic"}
    assert all(value > 0 for value in figures["rps"].values())
    assert figures["errors"] == {"off": 0, "bearer": 0, "basic": 0}


def test_client_bench_quick_run_reports_both_clients(tmp_path: Path) -> None:
    """bench/client_bench.py --quick: cargohold's client and skopeo push and pull against our registry."""
    require_tool("skopeo")
    report = tmp_path / "client.json"
    done = subprocess.run(
        [sys.executable, str(CLIENT_BENCH), "--quick", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    figures = json.loads(report.read_text())["figures"]
    assert set(figures) == {"push_MBps", "pull_MBps", "push_rss_MB", "pull_rss_MB"}
    for row in figures.values():
        assert row["cargohold"] > 0 and row["skopeo"] > 0


def test_download_check_catches_one_wrong_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timed downloads count bytes; the verified one must see a single flipped byte."""
    monkeypatch.syspath_prepend(str(BENCH.parent))  # the sink process imports the bench by name
    bench = importlib.import_module("registry_bench")
    pushed = bench.make_blob(tmp_path / "pushed", 3 * bench.RECEIVE_BLOCK + 5)
    served = bytearray(pushed.path.read_bytes())
    served[2 * bench.RECEIVE_BLOCK + 1] ^= 0xFF
    (tmp_path / "served").write_bytes(served)
    scratch = bytearray(bench.RECEIVE_BLOCK)
    with bench.sink(bench.Blob(tmp_path / "served", pushed.size, pushed.digest)) as url:
        client = bench.Client(url)
        try:
            assert bench.download(client, "repo", pushed, scratch) > 0
            with pytest.raises(
                bench.HttpFailure, match=f"differing from what was pushed at byte {2 * bench.RECEIVE_BLOCK}"
            ):
                bench.verify_download(client, "repo", pushed, scratch)
        finally:
            client.close()


def test_the_scaleout_bench_measures_every_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/scaleout_bench.py --quick: the fleet starts, every target reports every compared
    figure, and the summary holds the three comparisons."""
    require_tool("docker-registry")
    require_tool("wrk")
    report = tmp_path / "scaleout.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scaleout_bench.py"), "--quick", "--json", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(report.read_text())
    targets = document["report"]["targets"]
    assert set(targets) == {"embedded", "pg+s3", "dist+s3", "lb-1", "lb-3"}
    monkeypatch.syspath_prepend(str(BENCH.parent))
    scaleout = importlib.import_module("scaleout_bench")
    for name, target in targets.items():
        assert target["errors"] == [], f"{name}: {target['errors']}"
        for key in scaleout.KEYS:
            assert isinstance(target["figures"].get(key), (int, float)), f"{name} lacks {key}"
    assert "pg+s3/emb pg+s3/dist lb-3/lb-1" in document["summary"][0]


def test_supply_bench_quick_run(tmp_path: Path) -> None:
    """bench/supply_bench.py builds its image and database, scans, and reports every figure."""
    report = tmp_path / "supply.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "supply_bench.py"), "--quick", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(report.read_text())
    assert figures["image_packages"] == figures["found_packages"] == 1000
    assert figures["found_vulnerabilities"] == figures["inprocess_vulnerabilities"] > 0
    assert figures["import_records"] == 10_000 and figures["import_records_per_s"] > 0
    assert figures["import_postgres_records_per_s"] > 0
    for key in ("cli_sbom_scan_median_s", "sbom_big_64MiB_peak_rss_MB", "sbom_small_8MiB_peak_rss_MB"):
        assert figures[key] > 0
    assert figures["push_images_per_s_scan_on_push"] > 0 and figures["push_images_per_s_off"] > 0
