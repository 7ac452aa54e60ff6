#!/usr/bin/env python3
"""Garbage collection racing pushes: cargohold beside Debian's docker-registry (Distribution 2.8).

For each registry: 16 clients push 200 images (shared and unique layers) in parallel while the
registry's own collector runs in a loop in another process against the live storage (back to
back, and with a pause between runs: --gc-pause) and two more clients delete every third image.
The collectors: `cargohold gc --grace 1s`, plus the server's scheduled GC every second;
`docker-registry garbage-collect config.yml`, which Distribution documents as needing
read-only mode. Then one last collection with no pushes running, and every
image whose tag survives is pulled through skopeo. Reported per registry: images pushed, tags
surviving, images that fail to pull (or whose tag vanished), unreferenced blobs left.

    .venv/bin/python bench/gc_race.py [--images 200] [--seed N] [--only cargohold] [--json FILE]

tests/test_gc_race.py runs the cargohold half as a test with strict assertions; the reference's
failures are a measurement, not a test, because they depend on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the scenario lives in the test support package

from tests.support.race import (  # noqa: E402
    RaceResult,
    RaceTarget,
    cargohold_blob_files,
    cargohold_freed,
    distribution_blob_files,
    distribution_freed,
    make_images,
    new_seed,
    run_race,
)
from tests.support.servers import Cargohold, Distribution, ServerProcess  # noqa: E402

REGISTRIES = ("cargohold", "docker-registry")
ROWS = [
    ("images pushed (manifest PUT 201)", lambda r: f"{r.pushed} / {r.images}"),
    ("manifest PUTs refused, then retried", lambda r: r.manifest_retries),
    ("blob uploads refused", lambda r: r.uploads_refused),
    ("images deleted", lambda r: r.deleted),
    ("tags surviving / expected", lambda r: f"{r.tags_surviving} / {r.tags_expected}"),
    ("images failing to pull (skopeo) or lost", lambda r: r.images_failing),
    ("collector runs during the pushes (failed)", lambda r: f"{r.gc_runs} ({r.gc_failures})"),
    ("blobs the collector freed during the pushes", lambda r: r.gc_freed_blobs),
    ("unreferenced blobs left after a final gc", lambda r: r.unreferenced_blobs),
    ("blobs surviving images need, missing", lambda r: r.missing_blobs),
    ("push phase, s", lambda r: f"{r.push_seconds:.1f}"),
]


def start(name: str, workdir: Path, grace: float) -> tuple[ServerProcess, RaceTarget]:
    if name == "cargohold":
        env = {"CARGOHOLD_GC_INTERVAL": "1s", "CARGOHOLD_GC_GRACE": f"{grace:g}s"}
        server = Cargohold(workdir, extra_env=env).start()
        gc = [sys.executable, "-m", "cargohold", "gc", "--json", "--data", str(server.data), "--grace", f"{grace:g}s"]
        data = server.data
        return server, RaceTarget(name, server.url, server.host, gc, lambda: cargohold_blob_files(data), False,
                                  cargohold_freed)  # fmt: skip
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed: run scripts/system-deps.sh as root")
    server = Distribution(workdir).start()
    gc = [binary, "garbage-collect", str(workdir / "config.yml")]
    root = workdir / "data"
    return server, RaceTarget(name, server.url, server.host, gc, lambda: distribution_blob_files(root), True,
                              distribution_freed)  # fmt: skip


def print_table(results: list[RaceResult]) -> None:
    width = max(len(label) for label, _ in ROWS)
    print(f"\n{'collector pause between runs, s':<{width}}  " + "  ".join(f"{r.gc_pause:>16g}" for r in results))
    print(f"{'':<{width}}  " + "  ".join(f"{r.registry:>16}" for r in results))
    for label, value in ROWS:
        print(f"{label:<{width}}  " + "  ".join(f"{value(r)!s:>16}" for r in results))
    for result in results:
        for line in result.pull_failures[:5] + result.lost_tags[:5]:
            print(f"  {result.registry} (pause {result.gc_pause:g}s): {line}")
        for error in result.gc_errors[:2]:
            last = error.strip().splitlines()[-1] if error.strip() else "?"
            print(f"  {result.registry} (pause {result.gc_pause:g}s) collector error: {last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repos", type=int, default=8)
    parser.add_argument("--grace", type=float, default=1.0, help="cargohold's GC grace period, seconds")
    parser.add_argument("--seed", type=int, help="seed of the images and pauses (default random, printed)")
    parser.add_argument(
        "--gc-pause",
        type=float,
        action="append",
        metavar="SECONDS",
        help="pause between collector runs; repeat for several runs (default: 0 and 1)",
    )
    parser.add_argument("--only", choices=REGISTRIES, action="append", help="run this registry only (repeatable)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else new_seed()
    print(f"seed {seed}; {args.images} images in {args.repos} repositories, every third deleted")
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-gc-race-"))
    results: list[RaceResult] = []
    try:
        for pause in args.gc_pause or [0.0, 1.0]:
            for name in args.only or REGISTRIES:
                server, target = start(name, workdir / f"{name}-{pause:g}", args.grace)
                try:
                    images = make_images(args.images, args.repos, seed)
                    results.append(run_race(target, images, grace=args.grace, seed=seed, gc_pause=pause, log=print))
                finally:
                    server.stop()
    finally:
        if args.keep_temp:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    if args.json:
        document = {"seed": seed, "results": [asdict(r) | {"images_failing": r.images_failing} for r in results]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
