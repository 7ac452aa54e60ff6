"""OSV advisories (https://ossf.github.io/osv-schema/) as a pure model, and the schema's matching rules.

`parse_advisory` checks a record's shape and names the record and field that is wrong; `affects` is the
schema's "Evaluation" pseudocode; `severity_of` turns CVSS vectors and the databases' own words into one
rating. Nothing here reads files or the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .severity import SEVERITY_ORDER, UNKNOWN, Rating, highest, rate_vector, rate_word
from .versions import InvalidVersion, version_key

__all__ = [
    "SEVERITY_ORDER",
    "Advisory",
    "AdvisoryError",
    "Affected",
    "Event",
    "Range",
    "Rating",
    "Reference",
    "Severity",
    "affects",
    "ecosystem_matches",
    "fixed_in",
    "parse_advisory",
    "severity_of",
]

EventKind = Literal["introduced", "fixed", "last_affected", "limit"]
RangeType = Literal["ECOSYSTEM", "SEMVER", "GIT"]
EVENT_KINDS: tuple[EventKind, ...] = ("introduced", "fixed", "last_affected", "limit")
RANGE_TYPES: tuple[RangeType, ...] = ("ECOSYSTEM", "SEMVER", "GIT")

# RFC 3339 date-time, as the schema requires for modified / published / withdrawn.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


class AdvisoryError(ValueError):
    """An OSV record that does not have the schema's shape; the message names the record and the field."""


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    value: str


@dataclass(frozen=True, slots=True)
class Range:
    type: RangeType
    events: tuple[Event, ...]
    repo: str | None = None


@dataclass(frozen=True, slots=True)
class Severity:
    type: str  # CVSS_V2, CVSS_V3, CVSS_V4, Ubuntu...
    score: str


@dataclass(frozen=True, slots=True)
class Reference:
    type: str
    url: str


@dataclass(frozen=True, slots=True)
class Affected:
    ecosystem: str  # in full, as the record writes it: "Debian:12", "Alpine:v3.19", "PyPI"; "" without a package
    name: str
    purl: str | None = None
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    severity: tuple[Severity, ...] = ()
    ecosystem_specific: dict[str, Any] = field(default_factory=dict, compare=False)
    database_specific: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    modified: str  # RFC 3339, as given
    published: str | None = None
    withdrawn: str | None = None  # set: the record no longer stands; what to do about it is the caller's call
    aliases: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    summary: str = ""
    details: str = ""
    severity: tuple[Severity, ...] = ()
    affected: tuple[Affected, ...] = ()
    references: tuple[Reference, ...] = ()
    database_specific: dict[str, Any] = field(default_factory=dict, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the record as given


# --- parsing ---------------------------------------------------------------------------------------------


class _Reader:
    """Typed access to one record's fields, with errors that say which record and which field."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id

    def fail(self, where: str, problem: str) -> AdvisoryError:
        return AdvisoryError(f"OSV record {self.record_id}: {where}: {problem}")

    def object(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def optional_object(self, data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        value = data.get(key)
        return {} if value is None else self.object(value, f"{where}{key}")

    def string(self, data: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}{key}", "missing (required)")
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}{key}", f"expected a string, got {type(value).__name__}")
        return value

    def timestamp(self, data: dict[str, Any], key: str, *, required: bool = False) -> str | None:
        value = self.string(data, key, "", required=required)
        if value is not None and not _TIMESTAMP.match(value):
            raise self.fail(key, f"{value!r} is not an RFC 3339 date-time (2024-01-31T12:00:00Z)")
        return value

    def list(self, data: dict[str, Any], key: str, where: str) -> list[Any]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{where}{key}", f"expected a list, got {type(value).__name__}")
        return value

    def strings(self, data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        items = self.list(data, key, where)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(f"{where}{key}[{index}]", f"expected a string, got {type(item).__name__}")
        return tuple(items)

    def severities(self, data: dict[str, Any], where: str) -> tuple[Severity, ...]:
        result = []
        for index, item in enumerate(self.list(data, "severity", where)):
            at = f"{where}severity[{index}]"
            entry = self.object(item, at)
            kind = self.string(entry, "type", f"{at}.", required=True)
            score = self.string(entry, "score", f"{at}.", required=True)
            assert kind is not None and score is not None
            result.append(Severity(kind, score))
        return tuple(result)


def parse_advisory(data: object) -> Advisory:
    """One OSV record (parsed JSON) as an Advisory; AdvisoryError naming the record and field if it is malformed."""
    if not isinstance(data, dict):
        raise AdvisoryError(f"an OSV record is a JSON object, got {type(data).__name__}")
    record_id = data.get("id")
    if not isinstance(record_id, str) or not record_id:
        raise AdvisoryError(f"OSV record without an id (a non-empty string): {str(data)[:120]}")
    read = _Reader(record_id)
    modified = read.timestamp(data, "modified", required=True)
    assert modified is not None
    references = []
    for index, item in enumerate(read.list(data, "references", "")):
        entry = read.object(item, f"references[{index}]")
        kind = read.string(entry, "type", f"references[{index}].") or ""
        url = read.string(entry, "url", f"references[{index}].", required=True)
        assert url is not None
        references.append(Reference(kind, url))
    return Advisory(
        id=record_id,
        modified=modified,
        published=read.timestamp(data, "published"),
        withdrawn=read.timestamp(data, "withdrawn"),
        aliases=read.strings(data, "aliases", ""),
        related=read.strings(data, "related", ""),
        summary=read.string(data, "summary", "") or "",
        details=read.string(data, "details", "") or "",
        severity=read.severities(data, ""),
        affected=tuple(
            _parse_affected(read, item, f"affected[{index}]")
            for index, item in enumerate(read.list(data, "affected", ""))
        ),
        references=tuple(references),
        database_specific=read.optional_object(data, "database_specific", ""),
        raw=data,
    )


def _parse_affected(read: _Reader, item: object, where: str) -> Affected:
    entry = read.object(item, where)
    ranges = tuple(
        _parse_range(read, value, f"{where}.ranges[{index}]")
        for index, value in enumerate(read.list(entry, "ranges", f"{where}."))
    )
    package = entry.get("package")
    if package is None:
        # The schema lets a record without a package describe GIT ranges only.
        if not ranges or any(r.type != "GIT" for r in ranges):
            raise read.fail(f"{where}.package", "missing (required unless every range is a GIT range)")
        ecosystem, name, purl = "", "", None
    else:
        package = read.object(package, f"{where}.package")
        ecosystem = read.string(package, "ecosystem", f"{where}.package.", required=True) or ""
        name = read.string(package, "name", f"{where}.package.", required=True) or ""
        purl = read.string(package, "purl", f"{where}.package.")
    return Affected(
        ecosystem=ecosystem,
        name=name,
        purl=purl,
        ranges=ranges,
        versions=read.strings(entry, "versions", f"{where}."),
        severity=read.severities(entry, f"{where}."),
        ecosystem_specific=read.optional_object(entry, "ecosystem_specific", f"{where}."),
        database_specific=read.optional_object(entry, "database_specific", f"{where}."),
    )


def _parse_range(read: _Reader, item: object, where: str) -> Range:
    entry = read.object(item, where)
    range_type = read.string(entry, "type", f"{where}.", required=True)
    if range_type not in RANGE_TYPES:
        raise read.fail(f"{where}.type", f"{range_type!r} is not one of {', '.join(RANGE_TYPES)}")
    repo = read.string(entry, "repo", f"{where}.")
    if range_type == "GIT" and not repo:
        raise read.fail(f"{where}.repo", "missing (required for a GIT range)")
    events = []
    for index, value in enumerate(read.list(entry, "events", f"{where}.")):
        at = f"{where}.events[{index}]"
        event = read.object(value, at)
        kinds = [kind for kind in EVENT_KINDS if kind in event]
        if len(kinds) != 1:
            found = ", ".join(kinds) or ", ".join(map(repr, event)) or "nothing"
            raise read.fail(at, f"an event has exactly one of {', '.join(EVENT_KINDS)}; found {found}")
        text = read.string(event, kinds[0], f"{at}.", required=True)
        assert text is not None
        events.append(Event(kinds[0], text))
    if not events:
        raise read.fail(f"{where}.events", "a range has at least one event")
    if not any(event.kind == "introduced" for event in events):
        raise read.fail(f"{where}.events", "a range has at least one introduced event")
    if {"fixed", "last_affected"} <= {event.kind for event in events}:
        raise read.fail(f"{where}.events", "a range has fixed or last_affected events, not both")
    assert range_type is not None
    return Range(range_type, tuple(events), repo)


# --- matching --------------------------------------------------------------------------------------------


def ecosystem_matches(advisory_ecosystem: str, package_ecosystem: str) -> bool:
    """Whether an advisory's ecosystem covers a package's: exactly, or a bare name covers its releases.

    "Debian" covers "Debian:12"; "Debian:12" covers "Debian:12" only; names compare exactly as OSV
    writes them ("Alpine:v3.19", "Red Hat:enterprise_linux:9::baseos", "Ubuntu:22.04:LTS").
    """
    if advisory_ecosystem == package_ecosystem:
        return True
    return ":" not in advisory_ecosystem and package_ecosystem.partition(":")[0] == advisory_ecosystem


def affects(affected: Affected, version: str, kind: str) -> bool:
    """Whether `version` (of a package whose version order is `kind`) is affected, by the schema's Evaluation.

    A version is affected when the explicit `versions` list names it or it lies in any range. In a range,
    limits first: with `limit` events, only a version below one of them is considered. Then the events in
    version order: introduced (or "0": before everything) makes the version vulnerable from there on,
    fixed makes it safe from that version on, last_affected from just after it; several
    introduced/fixed pairs are several windows. At one version, introduced comes before fixed.

    ECOSYSTEM ranges are read in the ecosystem's order (`kind`), SEMVER ranges in SemVer 2.0 (a Go or npm
    package version is first read in its own ecosystem's syntax, "v1.2.3" against OSV's bare "1.2.3").
    GIT ranges hold commit hashes, which cannot be ordered without the repository's commit graph: they
    match only through the `versions` list. A version (the package's, or an event's) that the range's order
    cannot parse means that range does not match; `affects` never raises for that.
    """
    if _listed(affected, version, kind):
        return True
    return any(_range_includes(r, version, kind) for r in affected.ranges)


def fixed_in(affected: Affected, version: str, kind: str) -> list[str]:
    """The fixed versions to move to from `version`: for each range that includes it, the first fix above it."""
    fixes: list[str] = []
    for r in affected.ranges:
        if not _range_includes(r, version, kind):
            continue
        order = _order_of(r, kind)
        target = _key(order, kind, version, package=True)
        assert target is not None
        candidates = []
        for event in r.events:
            key = _key(order, kind, event.value, package=False) if event.kind == "fixed" else None
            if key is not None and target < key:
                candidates.append((key, event.value))
        if candidates:
            best = min(candidates, key=lambda candidate: candidate[0])[1]
            if best not in fixes:
                fixes.append(best)
    return fixes


def _listed(affected: Affected, version: str, kind: str) -> bool:
    if version in affected.versions:
        return True
    # OSV writes Go module versions without their "v".
    return kind == "golang" and version.startswith("v") and version[1:] in affected.versions


def _order_of(r: Range, kind: str) -> str:
    return "semver" if r.type == "SEMVER" else kind


def _key(order: str, kind: str, text: str, *, package: bool) -> Any:
    """The sort key of a version in a range's order, or None where that order cannot place it."""
    if package and order == "semver" and kind in ("golang", "npm"):
        # The package's version in its own syntax ("v1.2.3"), held against bare SemVer: their keys are SemVer's.
        return _key_or_none(kind, text)
    if order == "golang" and not package and not text.startswith("v"):
        text = "v" + text  # OSV writes Go versions without the "v" that Go's own order requires
    return _key_or_none(order, text)


def _key_or_none(order: str, text: str) -> Any:
    try:
        return version_key(order, text)
    except InvalidVersion:
        return None


_INTRODUCED_FIRST = {"introduced": 0, "fixed": 1, "last_affected": 1}


def _range_includes(r: Range, version: str, kind: str) -> bool:
    if r.type == "GIT":
        return False
    order = _order_of(r, kind)
    target = _key(order, kind, version, package=True)
    if target is None:
        return False
    limits = [event.value for event in r.events if event.kind == "limit"]
    if limits and not any(_below_limit(order, kind, target, limit) for limit in limits):
        return False
    # The schema sorts the events and replays them; the state after the replay is the one set by the last
    # event (in that order) that applies to the version, so find that event instead of sorting.
    last: tuple[Any, ...] | None = None  # (not "0", version key, tie rank) of the last event that applies
    vulnerable = False
    for event in r.events:
        if event.kind == "limit":
            continue
        if event.kind == "introduced" and event.value == "0":
            position: tuple[Any, ...] = (0, None, 0)
        else:
            key = _key(order, kind, event.value, package=False)
            if key is None:
                return False  # an event this order cannot place: the range cannot be evaluated
            applies = key < target if event.kind == "last_affected" else not target < key
            if not applies:
                continue
            position = (1, key, _INTRODUCED_FIRST[event.kind])
        if last is None or last < position:
            last, vulnerable = position, event.kind == "introduced"
    return vulnerable


def _below_limit(order: str, kind: str, target: Any, limit: str) -> bool:
    if "*" in limit:
        return True  # the schema's infinity
    key = _key(order, kind, limit, package=False)
    return key is not None and target < key


# --- severity ------------------------------------------------------------------------------------------


def severity_of(advisory: Advisory, affected: Affected | None = None) -> Rating:
    """One rating for an advisory (as it bears on one affected package, if given).

    The highest of the CVSS_V4 / CVSS_V3 / CVSS_V2 vectors in the package's and the advisory's `severity`
    (a malformed vector is passed over); else the databases' words: an `Ubuntu` priority, then
    `database_specific.severity` (GHSA's "HIGH", "MODERATE" = MEDIUM), then Debian's
    `ecosystem_specific.urgency` ("unimportant" = LOW, "not yet assigned" = UNKNOWN); else UNKNOWN.
    """
    entries = (*(affected.severity if affected else ()), *advisory.severity)
    scored = highest([r for r in (rate_vector(e.type, e.score) for e in entries) if r is not None])
    if scored is not None:
        return scored
    for entry in entries:
        if entry.type == "Ubuntu":
            return rate_word(entry.score, "Ubuntu")
    for where, specific in (
        ("affected.database_specific.severity", affected.database_specific if affected else {}),
        ("database_specific.severity", advisory.database_specific),
    ):
        word = specific.get("severity")
        if isinstance(word, str) and word.strip():
            return rate_word(word, where)
    urgency = affected.ecosystem_specific.get("urgency") if affected else None
    if isinstance(urgency, str) and urgency.strip():
        return rate_word(urgency, "ecosystem_specific.urgency")
    return UNKNOWN
