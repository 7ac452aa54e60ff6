"""One module per package database: what the walk should keep for it (its `INTEREST`), a pure
parser of the kept bytes, and `find`, which turns the kept files into `Found` records.

What is common to them lives here: the record, the findings with what could not be read, the
simple by-path interest, and the attribution of a package to the layer that brought it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..layers import Entry, Keep, StreamReader
from ..packages import PackageType


class CatalogError(Exception):
    """A package record that cannot be read: the message names the file and what is wrong."""


@dataclass(frozen=True)
class Found:
    """One installed package as a database records it, before it is named for advisories."""

    type: PackageType
    name: str
    version: str
    location: str  # the path of the record in the image
    layer: str | None  # the layer that first brought this version
    licenses: tuple[str, ...] = ()
    source: str | None = None
    source_version: str | None = None
    arch: str | None = None
    epoch: int | None = None  # rpm's, kept apart: the purl carries it as a qualifier


@dataclass
class Findings:
    packages: list[Found] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "path: why", for the report


@dataclass(frozen=True)
class PathRule:
    wants: Callable[[str], bool]
    level: Keep = Keep.CONTENT
    max_size: int | None = None  # larger files are not kept at all


@dataclass(frozen=True)
class PathInterest:
    """An interest in regular files (and hardlinks to them) chosen by path: the first rule
    that wants a path says how much of it to keep."""

    name: str
    rules: tuple[PathRule, ...]

    def keep(self, entry: Entry) -> Keep:
        if entry.kind not in ("file", "hardlink"):
            return Keep.NOTHING
        for rule in self.rules:
            if rule.wants(entry.path):
                if rule.max_size is not None and entry.size > rule.max_size:
                    return Keep.NOTHING
                return rule.level
        return Keep.NOTHING

    def stream(self, entry: Entry) -> StreamReader | None:
        return None


def first_layers(history: list[tuple[str, bytes]], versions_of: Callable[[bytes], dict[str, str]]) -> dict[str, str]:
    """For each package key in the newest content of a database, the digest of the layer from
    which on it has had its current version without a break: the layer that brought it, not a
    later one that merely rewrote the file (an upgrade of another package, a `chown -R`)."""
    if not history:
        return {}
    newest_layer, newest = history[-1]
    current = versions_of(newest)
    first = dict.fromkeys(current, newest_layer)
    alive = set(current)
    for layer, content in reversed(history[:-1]):
        if not alive:
            break
        try:
            earlier = versions_of(content)
        except CatalogError:
            break  # an older copy that cannot be read attributes nothing further back
        for key in list(alive):
            if earlier.get(key) == current[key]:
                first[key] = layer
            else:
                alive.discard(key)
    return first


def text_of(content: bytes) -> str:
    return content.decode("utf-8", errors="replace")
