#!/usr/bin/env python3
"""Restart time: from exec to the first answer on `GET /v2/`, cargohold against Debian's
docker-registry (Distribution 2.8), in alternating rounds on the same machine.

A client that arrives while a registry restarts (crane, docker, a CI job retrying) fails for
good when its connection is refused, so two moments are measured: the port accepting
connections, and the first HTTP answer. cargohold restarts on an existing data directory
with access control on (its default), as after a crash; a first start, which also creates
the administrator and the signing key, is reported apart.

    python bench/startup_bench.py [--rounds N] [--workers N] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_bench import DISTRIBUTION_CONFIG, free_port

POLL = 0.002


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v2/")
        status = conn.getresponse().status
        conn.close()
        return status in (200, 401)
    except (OSError, http.client.HTTPException):
        return False


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def time_start(command: list[str], port: int, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to a connectable port, seconds to the first answer), then the server is killed."""
    while _accepts(port):  # the last round's server is still going away
        time.sleep(POLL)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while not _accepts(port):
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}")
            time.sleep(POLL)
        bound = time.perf_counter() - started
        while not _answers(port):
            time.sleep(POLL)
        return bound, time.perf_counter() - started
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # as a crash would; the next round is the restart
        process.wait()


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry is not installed: run `make system-deps`")

    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    ours_port, theirs_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")} | {"CARGOHOLD_AUTH": "on"}
    ours = [
        sys.executable, "-m", "cargohold", "serve", "--listen", f"127.0.0.1:{ours_port}",
        "--data", str(work / "data"), "--workers", str(args.workers),
    ]  # fmt: skip
    config = work / "distribution.yml"
    config.write_text(DISTRIBUTION_CONFIG.format(root=work / "distribution", addr=f"127.0.0.1:{theirs_port}"))
    theirs = [binary, "serve", str(config)]

    first_start = time_start(ours, ours_port, env)  # creates the admin, the key and the schema
    results: dict[str, list[tuple[float, float]]] = {"cargohold": [], "docker-registry": []}
    for _ in range(args.rounds):
        results["cargohold"].append(time_start(ours, ours_port, env))
        results["docker-registry"].append(time_start(theirs, theirs_port, dict(os.environ)))
    shutil.rmtree(work, ignore_errors=True)

    report: dict[str, object] = {"rounds": args.rounds, "workers": args.workers, "first_start": first_start[1]}
    print(f"restart, {args.rounds} alternating rounds, cargohold with auth on and {args.workers} worker(s)")
    print(f"{'':18} {'port open (median, min-max)':>30} {'first answer (median, min-max)':>32}")
    for name, samples in results.items():
        bound, ready = _summary([s[0] for s in samples]), _summary([s[1] for s in samples])
        report[name] = {"bound": bound, "ready": ready}
        print(
            f"{name:18} {bound['median'] * 1000:9.0f} ms ({bound['min'] * 1000:.0f}-{bound['max'] * 1000:.0f}) "
            f"{' ' * 8}{ready['median'] * 1000:9.0f} ms ({ready['min'] * 1000:.0f}-{ready['max'] * 1000:.0f})"
        )
    pairs = zip(results["cargohold"], results["docker-registry"], strict=True)
    ratio = statistics.median(ours[1] / theirs[1] for ours, theirs in pairs)
    report["ready_ratio"] = ratio
    print(f"cargohold's first answer takes {ratio:.1f}x docker-registry's (median of per-round ratios)")
    print(f"cargohold's first start (schema, administrator, signing key): {first_start[1] * 1000:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
