#!/usr/bin/env python3
"""What access control costs: manifest HEAD requests/s with auth off, and on (bearer token, basic).

Two cargohold servers run side by side, one open and one with auth, each serving the same
kind of image; rounds alternate between them and the median is reported. The goal: with
token auth, less than 15 % slower than without.

    python bench/auth_bench.py [--quick] [--rounds N] [--seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_bench import ManagedServer, cargohold_server, run_pyload

REPO = "bench/auth"
CONNS, THREADS = 64, 2
GOAL_SLOWDOWN = 0.15
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_image(base: str, auth: tuple[str, str] | None) -> str:
    """A one-layer image tagged `latest`; returns the manifest path the load asks for."""
    with httpx.Client(base_url=base, auth=auth, timeout=60) as client:
        blobs = []
        for data in (json.dumps({"os": "linux", "architecture": "amd64"}).encode(), uuid.uuid4().bytes * 64):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            start = client.post(f"/v2/{REPO}/blobs/uploads/")
            start.raise_for_status()
            client.put(start.headers["location"], params={"digest": digest}, content=data).raise_for_status()
            blobs.append({"digest": digest, "size": len(data)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blobs[0]},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blobs[1]}],
        }
        put = client.put(f"/v2/{REPO}/manifests/latest", json=manifest, headers={"content-type": OCI_MANIFEST})
        put.raise_for_status()
    return f"/v2/{REPO}/manifests/latest"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    rounds, seconds = (1, 1) if args.quick else (args.rounds, args.seconds)

    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        work = Path(tmp)
        quiet = {"CARGOHOLD_ACCESS_LOG": "false", "CARGOHOLD_GC_INTERVAL": "0"}
        open_server = cargohold_server(work / "open", sys.executable, {**quiet, "CARGOHOLD_AUTH": "off"})
        auth_server = cargohold_server(work / "auth", sys.executable, {**quiet, "CARGOHOLD_AUTH": "on"})
        servers: list[ManagedServer] = [open_server, auth_server]
        try:
            for server in servers:
                server.start()
            password = (auth_server.workdir / "data" / "initial-admin-password").read_text().strip()
            path = push_image(open_server.url, None)
            push_image(auth_server.url, ("admin", password))
            token = httpx.get(
                f"{auth_server.url}/token",
                params={"service": "cargohold", "scope": f"repository:{REPO}:pull"},
                auth=("admin", password),
            ).json()["token"]
            basic = httpx.BasicAuth("admin", password)._auth_header
            modes = {
                "off": (open_server, {}),
                "bearer": (auth_server, {"authorization": f"Bearer {token}"}),
                "basic": (auth_server, {"authorization": basic}),
            }
            rps: dict[str, list[float]] = {mode: [] for mode in modes}
            errors: dict[str, int] = dict.fromkeys(modes, 0)
            for _ in range(rounds):
                for mode, (server, headers) in modes.items():
                    result = run_pyload(server.url + path, "HEAD", THREADS, CONNS, seconds, headers)
                    rps[mode].append(result.rps)
                    errors[mode] += result.error_count
        finally:
            for server in servers:
                server.stop()

    medians = {mode: statistics.median(values) for mode, values in rps.items()}
    # This machine's speed drifts within minutes: each round's modes run back to back, so the
    # cost is the median of the rounds' own ratios rather than a ratio of medians.
    report = {
        "conns": CONNS,
        "seconds": seconds,
        "rounds": rounds,
        "rps": medians,
        "rps_rounds": rps,
        "errors": errors,
        "slowdown_bearer": 1 - statistics.median(b / o for b, o in zip(rps["bearer"], rps["off"], strict=True)),
        "slowdown_basic": 1 - statistics.median(b / o for b, o in zip(rps["basic"], rps["off"], strict=True)),
    }
    print(f"manifest HEAD by tag, {CONNS} connections, {rounds} round(s) of {seconds} s; medians")
    for mode, value in medians.items():
        print(f"  auth {mode:<7} {value:>9,.0f} req/s   errors {errors[mode]}")
    verdict = "met" if report["slowdown_bearer"] < GOAL_SLOWDOWN else "MISSED"
    print(f"  token auth costs {report['slowdown_bearer']:.1%} (goal < {GOAL_SLOWDOWN:.0%}: {verdict});"
          f" basic auth {report['slowdown_basic']:.1%} (medians of the rounds' paired ratios)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if any(errors.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
