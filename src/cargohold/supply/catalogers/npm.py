"""npm packages: the `package.json` of each package directory under a `node_modules`
(`node_modules/<name>/package.json`, `node_modules/@scope/<name>/package.json`, nested ones too);
a package's own inner package.json files (`node_modules/x/lib/package.json`) are not packages."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..layers import Keep, Kept
from . import CatalogError, Findings, Found, PathInterest, PathRule, first_layers

_PACKAGE_JSON = re.compile(r"(?:^|/)node_modules/(?:@[^/]+/)?[^/@.][^/]*/package\.json$")
_PACKAGE_LIMIT = 1024 * 1024


def is_package_json(path: str) -> bool:
    return path.endswith("/package.json") and "node_modules/" in path and _PACKAGE_JSON.search(path) is not None


INTEREST = PathInterest("npm", (PathRule(is_package_json, Keep.HISTORY, max_size=_PACKAGE_LIMIT),))


@dataclass(frozen=True)
class NpmRecord:
    name: str
    version: str
    licenses: tuple[str, ...]


def parse_package_json(content: bytes, *, location: str) -> NpmRecord:
    try:
        manifest = json.loads(content)
    except (ValueError, UnicodeDecodeError) as error:
        raise CatalogError(f"{location}: not JSON ({error})") from error
    if not isinstance(manifest, dict):
        raise CatalogError(f"{location}: not a JSON object")
    name, version = manifest.get("name"), manifest.get("version")
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        raise CatalogError(f"{location}: no name or version")
    return NpmRecord(name, version, _licenses(manifest))


def _licenses(manifest: dict[str, object]) -> tuple[str, ...]:
    """`license` as an SPDX expression (or the old `{"type": ...}`), or the old `licenses` list."""
    found: list[str] = []
    declared = manifest.get("license")
    if isinstance(declared, str) and declared.strip():
        found.append(declared.strip())
    elif isinstance(declared, dict) and isinstance(declared.get("type"), str):
        found.append(declared["type"])
    old = manifest.get("licenses")
    if not found and isinstance(old, list):
        for item in old:
            if isinstance(item, dict) and isinstance(item.get("type"), str):
                found.append(item["type"])
            elif isinstance(item, str):
                found.append(item)
    return tuple(dict.fromkeys(found))


def find(files: Mapping[str, Kept]) -> Findings:
    findings = Findings()
    for path, kept in files.items():
        if kept.content is None or not is_package_json(path):
            continue
        try:
            record = parse_package_json(kept.content, location=path)
        except CatalogError as error:
            findings.unreadable.append(str(error))
            continue

        def versions_of(content: bytes, path: str = path) -> dict[str, str]:
            earlier = parse_package_json(content, location=path)
            return {earlier.name: earlier.version}

        layers = first_layers(kept.history, versions_of)
        findings.packages.append(
            Found(
                type="npm",
                name=record.name,
                version=record.version,
                location=path,
                layer=layers.get(record.name, kept.entry.layer),
                licenses=record.licenses,
            )
        )
    return findings
