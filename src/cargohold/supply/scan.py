"""Matching an image's catalogue against the advisory database: which advisory affects which
installed package, how badly, and which version fixes it.

Distribution advisories are written against source packages (Debian's security tracker, Alpine's
secdb by origin), so a Debian or Alpine binary package is looked up by its source name and
version; rpm advisories name binary packages, so both names are looked up; language packages by
their own name. Each candidate is then judged by `osv.affects` in the package's own version
order, and only entries whose ecosystem covers the package's (`Debian` covers `Debian:12`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .advisories import AdvisoryStore, DatabaseState, package_key
from .osv import affects, ecosystem_matches, fixed_in
from .packages import Catalog, Package
from .severity import SEVERITY_ORDER, severity_rank

# Severities from worst to least, as reports list them; UNKNOWN (no rating published) ranks
# below everything for --fail-on.
SEVERITIES = tuple(reversed(SEVERITY_ORDER))


def at_least(severity: str, threshold: str) -> bool:
    return severity_rank(severity) >= severity_rank(threshold)


@dataclass(frozen=True)
class Vulnerability:
    id: str
    severity: str
    score: float | None
    summary: str
    aliases: tuple[str, ...]
    package: str
    version: str
    type: str
    purl: str
    ecosystem: str
    fixed: tuple[str, ...]
    layer: str | None
    location: str

    def known_as(self, name: str) -> bool:
        return name == self.id or name in self.aliases

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "aliases": list(self.aliases), "fixed": list(self.fixed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vulnerability:
        return cls(**{**data, "aliases": tuple(data["aliases"]), "fixed": tuple(data["fixed"])})


def summarise(vulnerabilities: Iterable[Vulnerability]) -> dict[str, int]:
    """How many at each severity, every severity present (worst first)."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for vulnerability in vulnerabilities:
        counts[vulnerability.severity] += 1
    return counts


@dataclass
class ScanReport:
    image: str
    digest: str
    catalog: Catalog
    vulnerabilities: list[Vulnerability]
    database: DatabaseState
    ignored: list[Vulnerability] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return summarise(self.vulnerabilities)

    def failing(self, threshold: str | None) -> list[Vulnerability]:
        if threshold is None:
            return []
        return [v for v in self.vulnerabilities if at_least(v.severity, threshold)]


def lookup_names(package: Package) -> set[str]:
    """The names advisories may give `package` under."""
    if package.type in ("deb", "apk"):
        return {package.advisory_name}
    if package.type == "rpm":
        return {package.name, *([package.source] if package.source else [])}
    return {package.name}


def _match_version(package: Package) -> str:
    return package.advisory_version if package.type in ("deb", "apk") else package.version


def match_catalog(catalog: Catalog, store: AdvisoryStore) -> list[Vulnerability]:
    """Every (advisory, package) pair where the advisory affects the installed version, sorted
    worst first."""
    wanted: dict[tuple[str, str], list[Package]] = {}
    for package in catalog.packages:
        for name in lookup_names(package):
            wanted.setdefault(package_key(package.ecosystem, name), []).append(package)
    hits: dict[tuple[str, str], tuple[Package, set[str]]] = {}
    for advisory_id, affected in store.candidates(wanted):
        for package in wanted.get(package_key(affected.ecosystem, affected.name), ()):
            if not ecosystem_matches(affected.ecosystem, package.ecosystem):
                continue
            version = _match_version(package)
            if affects(affected, version, package.type):
                _, fixes = hits.setdefault((advisory_id, package.purl), (package, set()))
                fixes.update(fixed_in(affected, version, package.type))
    described = store.described(advisory_id for advisory_id, _ in hits)
    found = []
    for (advisory_id, _), (package, fixes) in hits.items():
        advisory = described[advisory_id]
        found.append(
            Vulnerability(
                id=advisory_id,
                severity=advisory.severity,
                score=advisory.score,
                summary=advisory.summary,
                aliases=advisory.aliases,
                package=package.name,
                version=package.version,
                type=package.type,
                purl=package.purl,
                ecosystem=package.ecosystem,
                fixed=tuple(sorted(fixes)),
                layer=package.layer,
                location=package.location,
            )
        )
    found.sort(key=lambda v: (-severity_rank(v.severity), -(v.score or 0.0), v.package, v.id))
    return found


def split_ignored(
    vulnerabilities: Iterable[Vulnerability], ignore: Iterable[str]
) -> tuple[list[Vulnerability], list[Vulnerability]]:
    """(kept, ignored): an id on the ignore list matches a vulnerability's id or any alias."""
    names = set(ignore)
    kept: list[Vulnerability] = []
    ignored: list[Vulnerability] = []
    for vulnerability in vulnerabilities:
        (ignored if any(vulnerability.known_as(name) for name in names) else kept).append(vulnerability)
    return kept, ignored
