"""Alpine packages: apk's installed database, `lib/apk/db/installed`: one record per package,
records apart by a blank line, each line `X:value` (P name, V version, A arch, L licence,
o origin, the source package)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..layers import Keep, Kept
from . import CatalogError, Findings, Found, PathInterest, PathRule, first_layers, text_of

INSTALLED = "lib/apk/db/installed"

INTEREST = PathInterest("apk", (PathRule(lambda path: path == INSTALLED, Keep.HISTORY),))


@dataclass(frozen=True)
class ApkRecord:
    name: str
    version: str
    arch: str
    license: str
    origin: str

    @property
    def key(self) -> str:
        return f"{self.name}:{self.arch}"


def parse_installed(content: bytes, *, location: str = INSTALLED) -> list[ApkRecord]:
    records = []
    for number, block in enumerate(text_of(content).replace("\r\n", "\n").split("\n\n"), 1):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if len(line) >= 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:].strip()
        if not fields:
            continue
        name, version = fields.get("P", ""), fields.get("V", "")
        if not name or not version:
            missing = "P: (name)" if not name else "V: (version)"
            raise CatalogError(f"{location}: record {number} ({name or 'unnamed'}) has no {missing}")
        records.append(ApkRecord(name, version, fields.get("A", ""), fields.get("L", ""), fields.get("o", "")))
    return records


def find(files: Mapping[str, Kept]) -> Findings:
    findings = Findings()
    kept = files.get(INSTALLED)
    if kept is None or kept.content is None:
        return findings
    try:
        records = parse_installed(kept.content)
    except CatalogError as error:
        findings.unreadable.append(str(error))
        return findings
    layers = first_layers(kept.history, lambda content: {r.key: r.version for r in parse_installed(content)})
    for record in records:
        findings.packages.append(
            Found(
                type="apk",
                name=record.name,
                version=record.version,
                location=INSTALLED,
                layer=layers.get(record.key, kept.entry.layer),
                licenses=(record.license,) if record.license else (),
                source=record.origin or None,
                source_version=None,  # an origin package has the version of the packages it builds
                arch=record.arch or None,
            )
        )
    return findings
