"""Debian packages: dpkg's status database, as `var/lib/dpkg/status` or, as distroless images
write it, one file per package under `var/lib/dpkg/status.d/`; licences from the packages'
machine-readable (DEP-5) `usr/share/doc/<package>/copyright`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from debian.deb822 import Deb822

from ..layers import Keep, Kept
from . import CatalogError, Findings, Found, PathInterest, PathRule, first_layers

STATUS = "var/lib/dpkg/status"
STATUS_DIR = "var/lib/dpkg/status.d/"
_DOC = "usr/share/doc/"
_COPYRIGHT_LIMIT = 1024 * 1024  # a larger copyright file is no summary worth holding
_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s+\((?P<version>[^)]+)\))?$")
_DEP5 = re.compile(rb"^Format:[ \t]*\S*copyright-format", re.IGNORECASE)


@dataclass(frozen=True)
class DpkgRecord:
    name: str
    version: str
    arch: str
    source: str | None
    source_version: str | None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.arch}"


def is_status(path: str) -> bool:
    if path == STATUS:
        return True
    name = path[len(STATUS_DIR) :]
    return path.startswith(STATUS_DIR) and bool(name) and "/" not in name and not name.endswith(".md5sums")


def is_copyright(path: str) -> bool:
    return path.startswith(_DOC) and path.endswith("/copyright") and path.count("/") == 4


INTEREST = PathInterest(
    "dpkg",
    (PathRule(is_status, Keep.HISTORY), PathRule(is_copyright, Keep.CONTENT, max_size=_COPYRIGHT_LIMIT)),
)


def parse_status(content: bytes, *, location: str, require_status: bool = True) -> list[DpkgRecord]:
    """The installed packages of a status file. `require_status=False` for distroless's
    status.d files, which may leave the Status field out: each is one installed package."""
    records = []
    for number, paragraph in enumerate(Deb822.iter_paragraphs(content, use_apt_pkg=False), 1):
        status = paragraph.get("Status")
        if status is None and require_status:
            continue
        if status is not None and status.split() != ["install", "ok", "installed"]:
            continue
        name = paragraph.get("Package", "").strip()
        version = paragraph.get("Version", "").strip()
        if not name or not version:
            missing = "Package" if not name else "Version"
            raise CatalogError(f"{location}: record {number} ({name or 'unnamed'}) has no {missing} field")
        source, source_version = None, None
        if raw_source := paragraph.get("Source", "").strip():
            match = _SOURCE.match(raw_source)
            if match is None:
                raise CatalogError(
                    f"{location}: package {name}: Source {raw_source!r} is not `name` or `name (version)`"
                )
            source, source_version = match["name"], match["version"]
        records.append(DpkgRecord(name, version, paragraph.get("Architecture", "").strip(), source, source_version))
    return records


def parse_copyright(content: bytes) -> tuple[str, ...]:
    """The licences a machine-readable copyright file names (each License field's first line);
    () for a free-form one, which is not read for licences at all."""
    if not _DEP5.match(content):
        return ()
    found: dict[str, None] = {}
    for paragraph in Deb822.iter_paragraphs(content, use_apt_pkg=False):
        synopsis = paragraph.get("License", "").strip().split("\n", 1)[0].strip()
        if synopsis:
            found[synopsis] = None
    return tuple(found)


def find(files: Mapping[str, Kept]) -> Findings:
    findings = Findings()
    status_files = sorted(path for path in files if is_status(path) and files[path].content is not None)
    for path in status_files:
        kept = files[path]
        assert kept.content is not None
        require = path == STATUS
        try:
            records = parse_status(kept.content, location=path, require_status=require)
        except CatalogError as error:
            findings.unreadable.append(str(error))
            continue

        def versions_of(content: bytes, path: str = path, require: bool = require) -> dict[str, str]:
            return {
                record.key: record.version for record in parse_status(content, location=path, require_status=require)
            }

        layers = first_layers(kept.history, versions_of)
        for record in records:
            findings.packages.append(
                Found(
                    type="deb",
                    name=record.name,
                    version=record.version,
                    location=path,
                    layer=layers.get(record.key, kept.entry.layer),
                    licenses=_licenses(files, record.name),
                    source=record.source,
                    source_version=record.source_version,
                    arch=record.arch or None,
                )
            )
    return findings


def _licenses(files: Mapping[str, Kept], package: str) -> tuple[str, ...]:
    kept = files.get(f"{_DOC}{package}/copyright")
    if kept is None or kept.content is None:
        return ()
    return parse_copyright(kept.content)
