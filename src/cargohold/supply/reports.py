"""A scan report as people and tools read it: a table, JSON, SARIF 2.1.0 (code-scanning
dashboards), CycloneDX 1.6 with a vulnerabilities section (the SBOM and its findings in one file,
as trivy and grype write them)."""

from __future__ import annotations

import io
import json
import time
from importlib.metadata import version
from typing import Any

from rich.console import Console
from rich.table import Table

from .packages import Catalog
from .scan import SEVERITIES, ScanReport, Vulnerability

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note"}
STALE_DAYS = 7.0


def database_line(report: ScanReport, now: float | None = None) -> str:
    """The advisory database's size and age, with a warning when it is stale or empty."""
    state = report.database
    if state.advisories == 0:
        return "warning: the advisory database is empty: run `cargohold vulndb import` (nothing can be found)"
    age = state.age_days(now)
    text = f"advisory database: {state.advisories} advisories, newest modified {state.newest}"
    if age is not None and age > STALE_DAYS:
        text += f" ({age:.0f} days ago): warning: stale, import a newer archive"
    return text


def as_json(report: ScanReport) -> dict[str, Any]:
    catalog = report.catalog
    return {
        "image": report.image,
        "digest": report.digest,
        "distro": catalog.distro.label if catalog.distro else None,
        "packages": len(catalog.packages),
        "summary": report.counts(),
        "vulnerabilities": [v.to_dict() for v in report.vulnerabilities],
        "ignored": [v.to_dict() for v in report.ignored],
        "database": {
            "advisories": report.database.advisories,
            "newest": report.database.newest,
            "imported": report.database.imported,
            "ageDays": report.database.age_days(),
        },
    }


def table(report: ScanReport, width: int = 160) -> str:
    counts = report.counts()
    catalog = report.catalog
    distro = catalog.distro.label if catalog.distro else "unknown distribution"
    lines = [
        f"{report.image} ({report.digest}): {distro}, {len(catalog.packages)} packages",
        "vulnerabilities: " + ", ".join(f"{counts[label]} {label.lower()}" for label in SEVERITIES if counts[label]),
    ]
    if not report.vulnerabilities:
        lines[1] = "vulnerabilities: none found"
    if report.ignored:
        lines.append(f"ignored: {len(report.ignored)} ({', '.join(sorted({v.id for v in report.ignored}))})")
    grid = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("SEVERITY", "ID", "PACKAGE", "INSTALLED", "FIXED IN", "SUMMARY"):
        grid.add_column(column, overflow="fold" if column == "SUMMARY" else "ellipsis")
    for v in report.vulnerabilities:
        grid.add_row(v.severity, v.id, v.package, v.version, ", ".join(v.fixed) or "-", v.summary[:100])
    out = io.StringIO()
    if report.vulnerabilities:
        Console(file=out, width=width, no_color=True, highlight=False).print(grid)
    return "\n".join(lines) + "\n" + out.getvalue()


def _rule(v: Vulnerability) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": v.id,
        "shortDescription": {"text": v.summary or v.id},
        "helpUri": f"https://osv.dev/vulnerability/{v.id}",
        "properties": {"security-severity": f"{v.score:.1f}" if v.score is not None else "0.0", "tags": ["security"]},
    }
    return rule


def sarif(report: ScanReport) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for v in report.vulnerabilities:
        rules.setdefault(v.id, _rule(v))
        fixed = f"; fixed in {', '.join(v.fixed)}" if v.fixed else "; no fix published"
        results.append(
            {
                "ruleId": v.id,
                "level": _SARIF_LEVEL.get(v.severity, "note"),
                "message": {"text": f"{v.package} {v.version} is affected by {v.id} ({v.severity}){fixed}"},
                "locations": [
                    {
                        "physicalLocation": {"artifactLocation": {"uri": v.location or report.image}},
                        "logicalLocations": [{"name": v.purl, "kind": "package"}],
                    }
                ],
                "properties": {"purl": v.purl, "layer": v.layer},
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "cargohold",
                        "version": version("cargohold"),
                        "informationUri": "https://github.com/cargohold/cargohold",
                        "rules": list(rules.values()),
                    }
                },
                "results": results,
                "properties": {"image": report.image, "digest": report.digest, "generated": time.time()},
            }
        ],
    }


def catalog_table(catalog: Catalog) -> str:
    grid = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("TYPE", "NAME", "VERSION", "LICENCE", "LAYER"):
        grid.add_column(column)
    for p in catalog.packages:
        grid.add_row(p.type, p.name, p.version, ", ".join(p.licenses) or "-", (p.layer or "")[7:19])
    out = io.StringIO()
    Console(file=out, width=200, no_color=True, highlight=False).print(grid)
    return out.getvalue()


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)
