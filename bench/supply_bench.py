#!/usr/bin/env python3
"""The supply chain's figures: SBOM + scan of a Debian image with about 1,000 packages against a
database of 100,000 advisories, the advisory import rate (SQLite and PostgreSQL), memory on a 1 GiB layer, and the push
rate of a registry scanning on push against one that does not.

    .venv/bin/python bench/supply_bench.py [--quick] [--advisories N] [--json FILE] [--postgres]

The image: a Debian 12 layer whose dpkg database is this machine's own (`/var/lib/dpkg`: status
and every package's file lists, a real Debian system's) topped up to --packages with real
records from apt's package index (`apt-cache dumpavail`), with its `/usr/share/doc/*/copyright`
files and `/etc/os-release`. The database: --advisories OSV records shaped like osv.dev's
(DEBIAN-CVE / GHSA / PYSEC / GO: summary, details, aliases, references, CVSS vectors, ranges),
about 5 % of them naming the image's source packages (fixed below or above the installed
version, as real ones are), the rest other packages of Debian, PyPI, npm and Go. Both are made
in a temporary directory; the import goes through `cargohold vulndb import` (a zip archive, as
osv.dev publishes them), the scan through `cargohold scan` on an OCI layout, each timed as a
user would see it (process start included) and, in-process, phase by phase.

No other scanner can run here (trivy, grype: not installable), so there is no reference beside
these figures; the 2 s goal is the issue's.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.support.layerbuild import LayerBuilder  # noqa: E402
from tests.support.oci import canonical, image_of, push_image  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.servers import Cargohold  # noqa: E402

from cargohold.storage.backends import open_database, open_metadata  # noqa: E402
from cargohold.supply.advisories import AdvisoryStore  # noqa: E402
from cargohold.supply.inspect import ImageInput, LayerInput, inspect_image  # noqa: E402
from cargohold.supply.scan import match_catalog  # noqa: E402

CLI = [sys.executable, "-m", "cargohold"]
OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
    'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
)


def _stanzas(text: str) -> list[str]:
    return [stanza.strip("\n") for stanza in text.split("\n\n") if stanza.strip()]


def _field(stanza: str, name: str) -> str:
    for line in stanza.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def dpkg_status(packages: int) -> tuple[str, list[tuple[str, str, str]]]:
    """This machine's dpkg status, topped up to `packages` entries from apt's index; returns the
    status text and (name, version, source name) per package."""
    installed = [s for s in _stanzas(Path("/var/lib/dpkg/status").read_text()) if "Status: install ok installed" in s]
    names = {_field(s, "Package") for s in installed}
    extra: list[str] = []
    if len(installed) < packages:
        available = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
        for stanza in _stanzas(available):
            name = _field(stanza, "Package")
            if name in names:
                continue
            names.add(name)
            lines = [line for line in stanza.splitlines() if not line.startswith(("Filename:", "MD5sum:", "SHA256:"))]
            lines.insert(1, "Status: install ok installed")
            extra.append("\n".join(lines))
            if len(installed) + len(extra) >= packages:
                break
    chosen = (installed + extra)[:packages]
    facts = []
    for stanza in chosen:
        source = _field(stanza, "Source").split(" ")[0] or _field(stanza, "Package")
        facts.append((_field(stanza, "Package"), _field(stanza, "Version"), source))
    return "\n\n".join(chosen) + "\n", facts


def debian_layer(status: str) -> bytes:
    """The layer: dpkg's database (status, this machine's file lists), copyright files, os-release."""
    layer = LayerBuilder().file("etc/os-release", OS_RELEASE).file("var/lib/dpkg/status", status)
    for info_file in sorted(Path("/var/lib/dpkg/info").glob("*.list")):
        layer.file(f"var/lib/dpkg/info/{info_file.name}", info_file.read_bytes())
    for copyright_file in sorted(Path("/usr/share/doc").glob("*/copyright")):
        if copyright_file.is_file():
            layer.file(str(copyright_file).lstrip("/"), copyright_file.read_bytes())
    return gzip.compress(layer.tar(), compresslevel=6)


def write_layout(
    path: Path, layers: list[Path], media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"
) -> str:
    """An OCI layout holding one image of these layer files (moved in); returns its reference."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def put_file(source: Path) -> dict[str, Any]:
        hashed = hashlib.sha256()
        with source.open("rb") as handle:
            while piece := handle.read(1 << 20):
                hashed.update(piece)
        size = source.stat().st_size
        source.rename(blobs / hashed.hexdigest())
        return {"digest": f"sha256:{hashed.hexdigest()}", "size": size}

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)},
            "layers": [{"mediaType": media_type, **put_file(layer)} for layer in layers],
        }
    ).encode()
    descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **put(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "bench"},
    }
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return f"oci:{path}:bench"


VECTORS = (
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:L/A:N",
    "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N",
    "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
)


def advisories(count: int, image: list[tuple[str, str, str]], seed: int = 7) -> list[dict[str, Any]]:
    """`count` OSV records: ~5 % on the image's source packages, the rest on other packages."""
    rng = random.Random(seed)
    sources = sorted({(source, version) for _, version, source in image})
    records = []
    for index in range(count):
        cve = f"CVE-{2015 + index % 11}-{10000 + index}"
        ours = index % 20 == 0
        if ours:
            name, installed = sources[rng.randrange(len(sources))]
            fixed = installed + ("+deb12u9" if rng.random() < 0.5 else "~pre1")  # above / below the installed one
            ecosystem, ident = "Debian:12", f"DEBIAN-{cve}"
            events: list[dict[str, str]] = [{"introduced": "0"}, {"fixed": fixed}]
        else:
            kind = index % 4
            ecosystem, ident = [
                ("Debian:12", f"DEBIAN-{cve}"),
                ("PyPI", f"PYSEC-{index}"),
                ("npm", f"GHSA-{index:x}"),
                ("Go", f"GO-{index}"),
            ][kind]
            name = f"{['libfoo', 'pyfoo', 'nodefoo', 'github.com/foo/bar'][kind]}{index % 9000}"
            events = [
                {"introduced": "0"},
                {"fixed": f"{rng.randrange(1, 9)}.{rng.randrange(20)}.{rng.randrange(30)}"},
            ]
        record: dict[str, Any] = {
            "schema_version": "1.6.0",
            "id": ident,
            "modified": f"2026-{1 + index % 11:02d}-{1 + index % 28:02d}T12:00:00Z",
            "published": "2024-01-01T00:00:00Z",
            "aliases": [cve],
            "summary": f"{name}: a flaw in request parsing",
            "details": "A crafted input can make the parser read past the end of its buffer. " * 6,
            "references": [{"type": "ADVISORY", "url": f"https://security-tracker.debian.org/tracker/{cve}"}],
            "affected": [
                {"package": {"ecosystem": ecosystem, "name": name}, "ranges": [{"type": "ECOSYSTEM", "events": events}]}
            ],
        }
        if rng.random() < 0.7:
            record["severity"] = [{"type": "CVSS_V4" if "4.0" in (v := rng.choice(VECTORS)) else "CVSS_V3", "score": v}]
        records.append(record)
    return records


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - started, done


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one command, from its own rusage."""
    script = (
        "import resource, subprocess, sys, time; s = time.perf_counter(); "
        "c = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
        "t = time.perf_counter() - s; "
        "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
        "sys.exit(c.returncode)"
    )
    done = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, check=True)
    seconds, megabytes = done.stdout.split()
    return float(seconds), float(megabytes)


def big_layer(path: Path, size: int) -> Path:
    """A gzip layer of `size` bytes of incompressible-ish content in a handful of files, plus a
    dpkg status, written to disk in a stream (never in memory)."""
    with gzip.open(path, "wb", compresslevel=1) as out, tarfile.open(fileobj=out, mode="w|") as archive:  # type: ignore[arg-type]
        status = b"Package: bench\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n\n"
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.size = len(status)
        archive.addfile(info, io.BytesIO(status))
        piece = os.urandom(1 << 20)
        per_file = size // 8
        for index in range(8):
            info = tarfile.TarInfo(f"opt/data/blob-{index}.bin")
            info.size = per_file

            class Repeat(io.RawIOBase):
                left = per_file

                def readable(self) -> bool:
                    return True

                def readinto(self, buffer: Any) -> int:
                    count = min(len(buffer), self.left, len(piece))
                    buffer[:count] = piece[:count]
                    self.left -= count
                    return count

            archive.addfile(info, io.BufferedReader(Repeat()))
    return path


def postgres_import(work: Path, archive: Path, records: int) -> dict[str, Any]:
    """The same import into a PostgreSQL of its own (the fleet's database)."""
    # A directory of its own under /tmp: the postgres user cannot enter the benchmark's (mode 0700).
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="supply-bench-pg-")))
    server.start()
    try:
        settings = work / "postgres.yaml"
        settings.write_text(f"database: {server.create_database()}\n")
        seconds, done = timed(
            [*CLI, "vulndb", "import", "--config", str(settings), "--data", str(work / "pg-data"), str(archive)]
        )
        assert done.returncode == 0, done.stderr
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
    return {"import_postgres_seconds": round(seconds, 2), "import_postgres_records_per_s": round(records / seconds)}


def push_rate(work: Path, images: int, rounds: int) -> dict[str, Any]:
    """Images pushed per second (small images, each a dpkg status layer of its own) to a registry
    with scan on push and to one without, in alternating rounds: what the scan worker beside
    the HTTP workers costs a push on this 2-core machine."""
    servers = {
        "scan_on_push": Cargohold(work / "scanning", extra_env={"CARGOHOLD_SCAN_ON_PUSH": "*"}),
        "off": Cargohold(work / "plain"),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        for round_ in range(rounds):
            for name in sorted(servers, reverse=round_ % 2 == 1):
                server = servers[name]
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    started = time.perf_counter()
                    for index in range(images):
                        status = f"Package: app{round_}-{index}\nStatus: install ok installed\nVersion: 1.{index}\n\n"
                        layer = gzip.compress(LayerBuilder().file("var/lib/dpkg/status", status).tar())
                        config = canonical({"architecture": "amd64", "os": "linux", "nonce": f"{name}{round_}{index}"})
                        push_image(client, f"team/app{index % 4}", image_of(config, [layer]), f"r{round_}-{index}")
                    rates[name].append(images / (time.perf_counter() - started))
    finally:
        for server in servers.values():
            server.stop()
    median = {name: sorted(values)[len(values) // 2] for name, values in rates.items()}
    return {
        "push_images_per_s_scan_on_push": round(median["scan_on_push"], 1),
        "push_images_per_s_off": round(median["off"], 1),
        "push_ratio_scan_on_push_to_off": round(median["scan_on_push"] / median["off"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--advisories", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="scans timed (the best and the median are shown)")
    parser.add_argument("--big-layer-mib", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="10,000 advisories, a 64 MiB big layer, 1 round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.advisories, args.big_layer_mib, args.rounds = 10_000, 64, 1
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="supply-bench-") as temporary:
        work = Path(temporary)
        data = work / "data"
        status, facts = dpkg_status(args.packages)
        layer = debian_layer(status)
        (work / "debian.tar.gz").write_bytes(layer)
        reference = write_layout(work / "debian", [work / "debian.tar.gz"])
        figures["image_packages"] = len(facts)
        figures["image_layer_MB"] = round(len(layer) / 1e6, 2)

        records = advisories(args.advisories, facts)
        archive = work / "all.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for record in records:
                zipped.writestr(f"{record['id']}.json", json.dumps(record))
        seconds, done = timed([*CLI, "vulndb", "import", "--data", str(data), str(archive)])
        assert done.returncode == 0, done.stderr
        figures["import_records"] = len(records)
        figures["import_seconds"] = round(seconds, 2)
        figures["import_records_per_s"] = round(len(records) / seconds)
        seconds, done = timed([*CLI, "vulndb", "import", "--data", str(data), str(archive)])
        figures["reimport_unchanged_seconds"] = round(seconds, 2)
        figures.update(postgres_import(work, archive, len(records)))

        scans = []
        for _ in range(args.rounds):
            seconds, done = timed([*CLI, "scan", "--data", str(data), "--format", "json", reference])
            assert done.returncode == 0, done.stderr
            scans.append(seconds)
            report = json.loads(done.stdout)
        scans.sort()
        figures["cli_sbom_scan_best_s"] = round(scans[0], 3)
        figures["cli_sbom_scan_median_s"] = round(scans[len(scans) // 2], 3)
        figures["found_packages"] = report["packages"]
        figures["found_vulnerabilities"] = len(report["vulnerabilities"])

        # In-process, phase by phase (no interpreter start, no client).
        database = open_database(data / "metadata.sqlite3")
        open_metadata(database)
        store = AdvisoryStore(database)
        blob = layer
        image = ImageInput(
            "bench",
            "sha256:" + "0" * 64,
            {"layers": []},
            b'{"config": {"User": "1000"}}',
            [
                LayerInput(
                    "sha256:" + hashlib.sha256(blob).hexdigest(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    len(blob),
                    lambda: io.BytesIO(blob),
                )
            ],
        )
        started = time.perf_counter()
        inspection = inspect_image(image)
        walked = time.perf_counter()
        found = match_catalog(inspection.catalog, store)
        matched = time.perf_counter()
        database.close()
        figures["inprocess_catalog_lint_s"] = round(walked - started, 3)
        figures["inprocess_match_s"] = round(matched - walked, 3)
        figures["inprocess_vulnerabilities"] = len(found)

        big = write_layout(work / "big", [big_layer(work / "big.tar.gz", args.big_layer_mib << 20)])
        small = write_layout(work / "small", [big_layer(work / "small.tar.gz", 8 << 20)])
        timings = {}
        for name, where in (("small_8MiB", small), (f"big_{args.big_layer_mib}MiB", big)):
            seconds, megabytes = peak_rss_mb([*CLI, "sbom", "--format", "table", where])
            timings[name] = seconds
            figures[f"sbom_{name}_s"] = round(seconds, 2)
            figures[f"sbom_{name}_peak_rss_MB"] = round(megabytes, 1)
        extra = timings[f"big_{args.big_layer_mib}MiB"] - timings["small_8MiB"]
        figures["walk_MBps_gzip_layer"] = round((args.big_layer_mib - 8) * 1.048576 / extra, 1) if extra > 0 else None
        figures.update(push_rate(work, 20 if args.quick else 60, 2 if args.quick else 4))
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
