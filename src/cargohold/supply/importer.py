"""Reading OSV records from what users have: single `.json` records (or a JSON list of them),
directories of them, and the per-ecosystem zip archives osv.dev publishes
(`https://osv-vulnerabilities.storage.googleapis.com/<ecosystem>/all.zip`), member by member so
an archive of any size is never held whole in memory.

A record that is not valid OSV is reported (file, member, what is wrong) and skipped; the
others are imported, so one bad record in a 100,000-record archive costs only itself.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .advisories import AdvisoryStore, ImportCounts
from .osv import Advisory, AdvisoryError, parse_advisory

# Progress: (records read so far, records in all the sources, or None when unknown yet).
Progress = Callable[[int, int | None], None]


class ImportSourceError(Exception):
    """A path that cannot be read as advisories at all (missing, not JSON, not a zip)."""


@dataclass
class ImportReport:
    counts: ImportCounts = field(default_factory=ImportCounts)
    read: int = 0
    rejected: list[str] = field(default_factory=list)  # "where: why", one per bad record


def _sources(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".json", ".zip") and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise ImportSourceError(f"{path}: no such file or directory")
    return found


def _count(sources: list[Path]) -> int:
    total = 0
    for source in sources:
        if source.suffix == ".zip":
            try:
                with zipfile.ZipFile(source) as archive:
                    total += sum(1 for info in archive.infolist() if info.filename.endswith(".json"))
            except zipfile.BadZipFile as err:
                raise ImportSourceError(f"{source}: not a zip archive ({err})") from None
        else:
            total += 1
    return total


def _documents(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.suffix != ".zip":
        yield str(source), source.read_bytes()
        return
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".json") and not info.is_dir():
                yield f"{source}:{info.filename}", archive.read(info)


def _records(where: str, data: bytes, report: ImportReport) -> Iterator[Advisory]:
    try:
        document = json.loads(data)
    except ValueError as err:
        report.rejected.append(f"{where}: not JSON ({err})")
        return
    for index, item in enumerate(document if isinstance(document, list) else [document]):
        label = f"{where}[{index}]" if isinstance(document, list) else where
        try:
            yield parse_advisory(item)
        except AdvisoryError as err:
            report.rejected.append(f"{label}: {err}")


def import_advisories(store: AdvisoryStore, paths: list[Path], progress: Progress | None = None) -> ImportReport:
    """Import every record under `paths` into `store`; returns what happened."""
    sources = _sources(paths)
    total = _count(sources)
    report = ImportReport()

    def advisories() -> Iterator[Advisory]:
        for source in sources:
            for where, data in _documents(source):
                report.read += 1
                yield from _records(where, data, report)
                if progress is not None:
                    progress(report.read, total)

    store.write(advisories(), report.counts)
    return report
