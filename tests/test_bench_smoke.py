"""Smoke run of bench/registry_bench.py: it measures both registries end to end (speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from tests.support.servers import require_tool

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
    "concurrent_upload_peak_rss_MB",
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


CLIENT_BENCH = ROOT / "bench" / "client_bench.py"


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
