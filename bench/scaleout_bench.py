#!/usr/bin/env python3
"""The fleet's figures beside the embedded default's, in one run.

Starts, all on loopback: a PostgreSQL of its own, moto's S3 server, and four registries:

    embedded   one cargohold on SQLite + the filesystem (the default)
    pg+s3      one cargohold on PostgreSQL + S3 (moto)
    dist+s3    Debian's docker-registry (Distribution 2.8) with its s3 driver on the same moto:
               the reference for what the object store itself allows
    lb-1       nginx in front of one replica on PostgreSQL + S3
    lb-3       nginx in front of three replicas on PostgreSQL + S3 (sharing one database and bucket)

each target with a database and bucket of its own, then runs bench/registry_bench.py against
all of them (each scenario on every target before the next, transfers in alternating rounds,
so the machine's drift hits all alike) and prints the comparisons the scale-out issue asks
for: pg+s3 against embedded (and against dist+s3), and lb-3 against lb-1.

    .venv/bin/python bench/scaleout_bench.py [--quick] [--json FILE] [-- registry_bench options]

Read the figures for what they are: every process shares this machine's two cores with the
load generator, moto keeps the bucket in its own Python process's memory, and three replicas on
two cores cannot be faster than one for work that is CPU-bound; on separate machines they
would be. What the run shows here is what each layer costs (the database round trips, the
object store's calls, the balancer's hop), not a fleet's ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the servers come from the test support package
sys.path.insert(0, str(ROOT / "bench"))

from tests.support.balancer import Nginx  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.s3 import CREDENTIALS, REGION, MotoServer  # noqa: E402
from tests.support.servers import Cargohold, ServerProcess, free_port, require_tool  # noqa: E402

import registry_bench  # noqa: E402

# The figures compared, as registry_bench names them.
KEYS = (
    "upload_monolithic_MBps",
    "upload_chunked_MBps",
    "download_MBps",
    "manifest_get_c16_rps",
    "manifest_get_c64_rps",
    "manifest_head_c16_rps",
    "manifest_head_c64_rps",
)


class DistributionOnS3(ServerProcess):
    """docker-registry with the s3 driver (configuration as in shared/reference/components.md)."""

    kind = "distribution"

    def __init__(self, workdir: Path, s3: MotoServer, bucket: str) -> None:
        super().__init__(workdir)
        self.s3, self.bucket = s3, bucket

    def command(self) -> list[str]:
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"http: {{addr: '{self.host}'}}\n"
            "storage:\n"
            "  delete: {enabled: true}\n"
            "  redirect: {disable: true}\n"
            "  cache: {blobdescriptor: inmemory}\n"
            f"  s3: {{accesskey: {CREDENTIALS['AWS_ACCESS_KEY_ID']}, "
            f"secretkey: {CREDENTIALS['AWS_SECRET_ACCESS_KEY']}, "
            f"region: {REGION}, regionendpoint: '{self.s3.endpoint}', bucket: {self.bucket}, secure: false, "
            "v4auth: true, rootdirectory: /registry}\n"
        )
        return [require_tool("docker-registry"), "serve", str(config)]

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # Go's S3 client trips on it


@contextmanager
def started(server: Any) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fleet(workdir: Path, stack: ExitStack, quiet: dict[str, str]) -> dict[str, str]:
    """Start everything; returns {target name: URL}."""
    database = stack.enter_context(started(PostgresServer(Path(tempfile.mkdtemp(prefix="cargohold-bench-pg-")))))
    s3 = stack.enter_context(started(MotoServer(workdir / "moto")))
    shared = {
        **s3.environment(),
        **quiet,
        "CARGOHOLD_DATABASE": database.create_database(),
        "CARGOHOLD_BLOB_STORE": f"s3://{s3.create_bucket()}",
        "CARGOHOLD_SECRET_FILE": str(workdir / "secret.key"),
    }
    lone = {
        **shared,
        "CARGOHOLD_DATABASE": database.create_database(),
        "CARGOHOLD_BLOB_STORE": f"s3://{s3.create_bucket()}",
    }
    alone = {
        **shared,
        "CARGOHOLD_DATABASE": database.create_database(),
        "CARGOHOLD_BLOB_STORE": f"s3://{s3.create_bucket()}",
        "CARGOHOLD_SECRET_FILE": str(workdir / "alone.key"),
    }
    embedded = stack.enter_context(started(Cargohold(workdir / "embedded", extra_env=quiet)))
    single = stack.enter_context(started(Cargohold(workdir / "pg-s3", extra_env=lone)))
    reference = stack.enter_context(started(DistributionOnS3(workdir / "dist-s3", s3, s3.create_bucket())))
    one = stack.enter_context(started(Cargohold(workdir / "lb-1-replica", extra_env=alone, port=free_port())))
    replicas = [
        stack.enter_context(started(Cargohold(workdir / f"replica{n}", extra_env=shared, port=free_port())))
        for n in range(3)
    ]
    behind_one = stack.enter_context(started(Nginx(workdir / "lb-1", [one.port])))
    behind_three = stack.enter_context(started(Nginx(workdir / "lb-3", [r.port for r in replicas])))
    return {
        "embedded": embedded.url,
        "pg+s3": single.url,
        "dist+s3": reference.url,
        "lb-1": behind_one.url,
        "lb-3": behind_three.url,
    }


def ratio(a: Any, b: Any) -> str:
    return f"{a / b:5.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "  n/a"


def summary(document: dict[str, Any]) -> str:
    figures = {name: target["figures"] for name, target in document["targets"].items()}
    names = ("embedded", "pg+s3", "dist+s3", "lb-1", "lb-3")
    lines = [f"{'figure':24} " + " ".join(f"{n:>9}" for n in names) + "  pg+s3/emb pg+s3/dist lb-3/lb-1"]
    for key in KEYS:
        row = [figures[name].get(key) for name in names]
        shown = " ".join(f"{v:9,.1f}" if isinstance(v, (int, float)) else f"{'-':>9}" for v in row)
        ratios = f"{ratio(row[1], row[0]):>9} {ratio(row[1], row[2]):>10} {ratio(row[4], row[3]):>9}"
        lines.append(f"{key.removesuffix('_rps'):24} {shown}  {ratios}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the run works, measures nothing")
    parser.add_argument("--json", type=Path, help="also write registry_bench's report and the summary here")
    parser.add_argument("rest", nargs="*", help="more registry_bench options (after --)")
    args = parser.parse_args(argv)
    for tool in ("nginx", "moto_server"):
        found = (
            shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists() or Path(sys.executable).with_name(tool).exists()
        )
        if not found:
            print(f"setup failed: {tool} is not installed (make system-deps; make .venv/.installed)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-scaleout-"))
    report = workdir / "report.json"
    # Request logging off everywhere: at these rates the access log is a measurable share.
    quiet = {"CARGOHOLD_ACCESS_LOG": "false", "CARGOHOLD_LOG_LEVEL": "warning"}
    try:
        with ExitStack() as stack:
            targets = fleet(workdir, stack, quiet)
            bench_args = [*(f"--target={name}={url}" for name, url in targets.items()), "--json", str(report)]
            status = registry_bench.main([*bench_args, *(["--quick"] if args.quick else []), *args.rest])
        if not report.exists():
            return status or 1
        document = json.loads(report.read_text())
        text = summary(document)
        print("\n" + text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"summary": text.splitlines(), "report": document}, indent=2) + "\n")
        return status
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
