"""RPM packages: the sqlite rpmdb (`var/lib/rpm/rpmdb.sqlite`, `usr/lib/sysimage/rpm/rpmdb.sqlite`),
whose table `Packages(hnum, blob)` holds one rpm header per package.

A header blob is big-endian: the count of index entries, the length of the data store, the
entries (tag, type, offset, count; 16 bytes each), then the data store they point into.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from ..layers import Keep, Kept
from . import CatalogError, Findings, Found, PathInterest, PathRule, first_layers

DATABASES = ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite")

INTEREST = PathInterest("rpm", (PathRule(lambda path: path in DATABASES, Keep.HISTORY),))

_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
_ENTRY = struct.Struct(">iIiI")  # tag, type, offset, count
_NAME, _VERSION, _RELEASE, _EPOCH, _LICENSE, _ARCH, _SOURCERPM = 1000, 1001, 1002, 1003, 1014, 1022, 1044
_WANTED = {_NAME, _VERSION, _RELEASE, _EPOCH, _LICENSE, _ARCH, _SOURCERPM}
_INT32, _STRING, _STRING_ARRAY, _I18NSTRING = 4, 6, 8, 9
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class RpmRecord:
    name: str
    version: str
    release: str
    epoch: int | None
    arch: str
    license: str
    sourcerpm: str

    @property
    def key(self) -> str:
        return f"{self.name}.{self.arch}"

    @property
    def evr(self) -> str:
        """epoch:version-release, rpm's full version, the epoch left out when there is none."""
        version_release = f"{self.version}-{self.release}" if self.release else self.version
        return f"{self.epoch}:{version_release}" if self.epoch else version_release


def parse_header(blob: bytes, *, where: str) -> dict[int, str | int]:
    """The wanted tags of one header blob (strings, or the first int32), by tag number."""
    if blob[:4] == _HEADER_MAGIC:
        blob = blob[8:]  # the header intro (magic, reserved) some writers keep
    if len(blob) < 8:
        raise CatalogError(f"{where}: header of {len(blob)} bytes is too short")
    count, data_length = struct.unpack_from(">II", blob)
    store = 8 + 16 * count
    if count > 65536 or store + data_length > len(blob):
        raise CatalogError(f"{where}: header says {count} entries and {data_length} data bytes in {len(blob)}")
    data = blob[store : store + data_length]
    values: dict[int, str | int] = {}
    for position in range(count):
        tag, kind, offset, _items = _ENTRY.unpack_from(blob, 8 + 16 * position)
        if tag not in _WANTED:
            continue
        if not 0 <= offset < len(data):
            raise CatalogError(f"{where}: tag {tag} points at {offset}, past the data store of {len(data)} bytes")
        if kind == _INT32:
            if offset + 4 > len(data):
                raise CatalogError(f"{where}: tag {tag}'s integer runs past the data store")
            values[tag] = struct.unpack_from(">I", data, offset)[0]
        elif kind in (_STRING, _STRING_ARRAY, _I18NSTRING):
            end = data.find(b"\0", offset)
            if end < 0:
                raise CatalogError(f"{where}: tag {tag}'s string is not terminated")
            values[tag] = data[offset:end].decode("utf-8", errors="replace")
    return values


def parse_rpmdb(content: bytes, *, location: str) -> list[RpmRecord]:
    """The packages of a sqlite rpmdb, gpg-pubkey pseudo-packages left out."""
    if not content.startswith(_SQLITE_MAGIC):
        raise CatalogError(f"{location}: not an sqlite database")
    if content[18:20] == b"\x02\x02":
        # WAL mode, which an in-memory copy cannot open: a closed database has nothing in its WAL.
        content = content[:18] + b"\x01\x01" + content[20:]
    connection = sqlite3.connect(":memory:")
    try:
        connection.deserialize(content)
        rows = connection.execute("SELECT hnum, blob FROM Packages ORDER BY hnum").fetchall()
    except sqlite3.Error as error:
        raise CatalogError(f"{location}: cannot read the Packages table ({error})") from error
    finally:
        connection.close()
    records = []
    for hnum, blob in rows:
        where = f"{location}: package {hnum}"
        if not isinstance(blob, bytes):
            raise CatalogError(f"{where}: the header is not a blob")
        tags = parse_header(blob, where=where)
        name, version = tags.get(_NAME), tags.get(_VERSION)
        if not isinstance(name, str) or not isinstance(version, str):
            raise CatalogError(f"{where}: header has no NAME or VERSION")
        if name == "gpg-pubkey":
            continue
        epoch = tags.get(_EPOCH)
        records.append(
            RpmRecord(
                name=name,
                version=version,
                release=str(tags.get(_RELEASE, "")),
                epoch=epoch if isinstance(epoch, int) else None,
                arch=str(tags.get(_ARCH, "")),
                license=str(tags.get(_LICENSE, "")),
                sourcerpm=str(tags.get(_SOURCERPM, "")),
            )
        )
    return records


def split_sourcerpm(sourcerpm: str) -> tuple[str, str] | None:
    """`bash-5.1.8-6.el9.src.rpm` -> ("bash", "5.1.8-6.el9"); None when it is not of that form."""
    for suffix in (".src.rpm", ".nosrc.rpm"):
        if sourcerpm.endswith(suffix):
            parts = sourcerpm[: -len(suffix)].rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], f"{parts[1]}-{parts[2]}"
    return None


def find(files: Mapping[str, Kept]) -> Findings:
    findings = Findings()
    for path in DATABASES:
        kept = files.get(path)
        if kept is None or kept.content is None:
            continue
        try:
            records = parse_rpmdb(kept.content, location=path)
        except CatalogError as error:
            findings.unreadable.append(str(error))
            continue

        def versions_of(content: bytes, path: str = path) -> dict[str, str]:
            return {record.key: record.evr for record in parse_rpmdb(content, location=path)}

        layers = first_layers(kept.history, versions_of)
        for record in records:
            source = split_sourcerpm(record.sourcerpm)
            source_version = None
            if source is not None:
                source_version = f"{record.epoch}:{source[1]}" if record.epoch else source[1]
            findings.packages.append(
                Found(
                    type="rpm",
                    name=record.name,
                    version=record.evr,
                    location=path,
                    layer=layers.get(record.key, kept.entry.layer),
                    licenses=(record.license,) if record.license else (),
                    source=source[0] if source else None,
                    source_version=source_version,
                    arch=record.arch or None,
                    epoch=record.epoch,
                )
            )
    return findings
