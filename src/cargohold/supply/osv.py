"""OSV records (https://ossf.github.io/osv-schema/) as a pure model, and the schema's evaluation of
whether a version is affected.

`affects` follows the schema's "Evaluation" section: a range's events, sorted in the package's
own version order, open (`introduced`) and close (`fixed`, `limit` exclusive; `last_affected`
inclusive) intervals; `introduced: "0"` is the start of time; any of the explicit `versions`
also matches. `ECOSYSTEM` ranges use the ecosystem's order (supply/versions.py), `SEMVER`
ranges SemVer 2.0's. `GIT` ranges name commits, which cannot be placed without the repository's
commit graph: they match only through the `versions` list that osv.dev fills in from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError

from .versions import InvalidVersion, version_key

EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")
SEVERITY_ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "NONE", "UNKNOWN")


class AdvisoryError(ValueError):
    """A record that is not valid OSV; the message names the record and the field."""


@dataclass(frozen=True)
class Event:
    kind: str  # introduced, fixed, last_affected, limit
    value: str


@dataclass(frozen=True)
class Range:
    type: str
    events: tuple[Event, ...]
    repo: str = ""


@dataclass(frozen=True)
class Severity:
    type: str  # CVSS_V2, CVSS_V3, CVSS_V4, Ubuntu
    score: str


@dataclass(frozen=True)
class Affected:
    ecosystem: str
    name: str
    purl: str = ""
    ranges: tuple[Range, ...] = ()
    versions: frozenset[str] = frozenset()
    severity: tuple[Severity, ...] = ()
    ecosystem_specific: Mapping[str, Any] = field(default_factory=dict)
    database_specific: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Advisory:
    id: str
    modified: str
    published: str = ""
    withdrawn: str | None = None
    aliases: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    summary: str = ""
    details: str = ""
    severity: tuple[Severity, ...] = ()
    affected: tuple[Affected, ...] = ()
    database_specific: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Rating:
    label: str
    score: float | None = None
    vector: str | None = None
    source: str = ""


# --- parsing -------------------------------------------------------------------------------------


def _text(data: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise AdvisoryError(f"{where}: `{key}` is missing")
        return ""
    if not isinstance(value, str):
        raise AdvisoryError(f"{where}: `{key}` must be a string, not {type(value).__name__}")
    return value


def _strings(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AdvisoryError(f"{where}: `{key}` must be a list of strings")
    return tuple(value)


def _mapping(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise AdvisoryError(f"{where}: `{key}` must be an object")
    return value


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise AdvisoryError(f"{where}: `{key}` must be a list")
    return value


def _severities(data: Mapping[str, Any], where: str) -> tuple[Severity, ...]:
    found = []
    for index, item in enumerate(_list(data, "severity", where)):
        spot = f"{where}.severity[{index}]"
        if not isinstance(item, dict):
            raise AdvisoryError(f"{spot}: must be an object")
        found.append(Severity(_text(item, "type", spot, True), _text(item, "score", spot, True)))
    return tuple(found)


def _range(data: Any, where: str) -> Range:
    if not isinstance(data, dict):
        raise AdvisoryError(f"{where}: must be an object")
    kind = _text(data, "type", where, True)
    if kind not in RANGE_TYPES:
        raise AdvisoryError(f"{where}: type {kind[:40]!r} is none of {', '.join(RANGE_TYPES)}")
    events = []
    for index, item in enumerate(_list(data, "events", where)):
        spot = f"{where}.events[{index}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise AdvisoryError(f"{spot}: an event has exactly one of {', '.join(EVENT_KINDS)}")
        ((name, value),) = item.items()
        if name not in EVENT_KINDS or not isinstance(value, str) or not value:
            raise AdvisoryError(f"{spot}: {name!r} is not an event with a version (one of {', '.join(EVENT_KINDS)})")
        events.append(Event(name, value))
    if not any(event.kind == "introduced" for event in events):
        raise AdvisoryError(f"{where}: a range needs an `introduced` event")
    if kind == "GIT" and not _text(data, "repo", where):
        raise AdvisoryError(f"{where}: a GIT range needs `repo`")
    return Range(kind, tuple(events), _text(data, "repo", where))


def _affected(data: Any, where: str) -> Affected:
    if not isinstance(data, dict):
        raise AdvisoryError(f"{where}: must be an object")
    package = _mapping(data, "package", where)
    ecosystem = _text(package, "ecosystem", f"{where}.package", bool(package))
    name = _text(package, "name", f"{where}.package", bool(package))
    ranges = tuple(_range(item, f"{where}.ranges[{i}]") for i, item in enumerate(_list(data, "ranges", where)))
    return Affected(
        ecosystem=ecosystem,
        name=name,
        purl=_text(package, "purl", f"{where}.package"),
        ranges=ranges,
        versions=frozenset(_strings(data, "versions", where)),
        severity=_severities(data, where),
        ecosystem_specific=_mapping(data, "ecosystem_specific", where),
        database_specific=_mapping(data, "database_specific", where),
    )


def parse_advisory(data: object) -> Advisory:
    """An OSV record from its JSON; AdvisoryError naming the record and field when it is not one."""
    if not isinstance(data, dict):
        raise AdvisoryError(f"an OSV record is a JSON object, not {type(data).__name__}")
    ident = data.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise AdvisoryError("the record has no `id`")
    where = ident[:80]
    return Advisory(
        id=ident,
        modified=_text(data, "modified", where, True),
        published=_text(data, "published", where),
        withdrawn=_text(data, "withdrawn", where) or None,
        aliases=_strings(data, "aliases", where),
        related=_strings(data, "related", where),
        summary=_text(data, "summary", where),
        details=_text(data, "details", where),
        severity=_severities(data, where),
        affected=tuple(
            _affected(item, f"{where}.affected[{i}]") for i, item in enumerate(_list(data, "affected", where))
        ),
        database_specific=_mapping(data, "database_specific", where),
        raw=data,
    )


# --- evaluation ----------------------------------------------------------------------------------


def ecosystem_matches(advisory_ecosystem: str, package_ecosystem: str) -> bool:
    """An ecosystem without a release ("Debian") covers every release ("Debian:12"); one with a
    release covers only that release."""
    if advisory_ecosystem == package_ecosystem:
        return True
    return ":" not in advisory_ecosystem and package_ecosystem.split(":", 1)[0] == advisory_ecosystem


def _key(order: str, version: str) -> Any:
    # Go module versions carry a `v`; OSV's Go records write them without one ("1.2.3"), binaries with.
    if order == "golang" and not version.startswith("v"):
        version = "v" + version
    return version_key(order, version)


def _intervals(events: Sequence[Event], order: str) -> list[tuple[Any | None, Any | None, bool, str | None]]:
    """(start key or None for "0", end key or None for open, end inclusive, fix) per interval,
    from the events in version order (the schema's evaluation)."""
    keyed = []
    for event in events:
        if event.kind == "introduced" and event.value == "0":
            keyed.append((None, event))
        else:
            keyed.append((_key(order, event.value), event))
    keyed.sort(key=lambda item: (item[0] is not None, item[0] if item[0] is not None else 0))
    intervals: list[tuple[Any | None, Any | None, bool, str | None]] = []
    start: Any | None = None
    open_ = False
    for key, event in keyed:
        if event.kind == "introduced":
            if not open_:
                start, open_ = key, True
        elif open_:
            inclusive = event.kind == "last_affected"
            fix = event.value if event.kind == "fixed" else None
            intervals.append((start, key, inclusive, fix))
            open_ = False
    if open_:
        intervals.append((start, None, False, None))
    return intervals


def _in(interval: tuple[Any | None, Any | None, bool, str | None], key: Any) -> bool:
    start, end, inclusive, _ = interval
    if start is not None and key < start:
        return False
    if end is None:
        return True
    return bool(key <= end) if inclusive else bool(key < end)


def _matching(affected: Affected, version: str, kind: str) -> list[tuple[Range, str | None]]:
    """The ranges of `affected` that hold `version`, each with its fix (None: no fix published)."""
    found: list[tuple[Range, str | None]] = []
    for range_ in affected.ranges:
        if range_.type == "GIT":
            continue
        order = "semver" if range_.type == "SEMVER" else kind
        try:
            key = _key(order, version.removeprefix("v") if order == "semver" else version)
            for interval in _intervals(range_.events, order):
                if _in(interval, key):
                    found.append((range_, interval[3]))
        except (InvalidVersion, TypeError):
            continue  # a version this order cannot place is not in the range
    return found


def affects(affected: Affected, version: str, kind: str) -> bool:
    """Whether `version` (a package of purl type `kind`) is affected by this entry."""
    return version in affected.versions or bool(_matching(affected, version, kind))


def fixed_in(affected: Affected, version: str, kind: str) -> list[str]:
    """The versions that fix the ranges holding `version` (empty: none published)."""
    return sorted({fix for _, fix in _matching(affected, version, kind) if fix})


# --- severity ------------------------------------------------------------------------------------

_TEXT_LABELS = {
    "critical": "CRITICAL",
    "high": "HIGH",
    "important": "HIGH",
    "moderate": "MEDIUM",
    "medium": "MEDIUM",
    "low": "LOW",
    "negligible": "LOW",
    "unimportant": "LOW",
    "none": "NONE",
}


def label_of(score: float) -> str:
    """CVSS v3/v4's qualitative scale."""
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    if score > 0.0:
        return "LOW"
    return "NONE"


def _vector_rating(severity: Severity) -> Rating | None:
    try:
        if severity.type == "CVSS_V4":
            score = float(CVSS4(severity.score).base_score)
        elif severity.type == "CVSS_V3":
            score = float(CVSS3(severity.score).base_score)
        elif severity.type == "CVSS_V2":
            score = float(CVSS2(severity.score).base_score)
        else:
            return None
    except (CVSSError, ValueError, KeyError, IndexError):
        return None  # a malformed vector says nothing
    if math.isnan(score):
        return None
    return Rating(label_of(score), score, severity.score, severity.type)


def severity_of(advisory: Advisory, affected: Affected | None = None) -> Rating:
    """The worst rating the record's CVSS vectors give (advisory level and affected level); failing
    those, the database's own word (GHSA's `severity`, Debian's `urgency`); else UNKNOWN."""
    entries = [affected] if affected is not None else list(advisory.affected)
    vectors = [*advisory.severity, *(s for entry in entries for s in entry.severity)]
    rated = [rating for rating in map(_vector_rating, vectors) if rating is not None]
    if rated:
        return max(rated, key=lambda rating: rating.score or 0.0)
    words = [advisory.database_specific.get("severity")]
    for entry in entries:
        words += [
            entry.database_specific.get("severity"),
            entry.ecosystem_specific.get("severity"),
            entry.ecosystem_specific.get("urgency"),
        ]
    labels = [
        _TEXT_LABELS[w.strip().lower()] for w in words if isinstance(w, str) and w.strip().lower() in _TEXT_LABELS
    ]
    if labels:
        return Rating(min(labels, key=SEVERITY_ORDER.index), source="database")
    return Rating("UNKNOWN")
