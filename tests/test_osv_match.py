"""OSV records of every range form, with the versions each must and must not match, in each
ecosystem's own order; parse errors that name the record and the field; ecosystem coverage;
severities from CVSS v2/v3/v4 vectors and the databases' own words."""

from __future__ import annotations

from typing import Any

import pytest

from cargohold.supply.osv import AdvisoryError, affects, ecosystem_matches, fixed_in, parse_advisory, severity_of


def record(*affected: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "TEST-1", "modified": "2026-01-01T00:00:00Z", "affected": list(affected), **extra}


def entry(ecosystem: str, name: str, *ranges: dict[str, Any], versions: list[str] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}, "ranges": list(ranges)}
    if versions is not None:
        found["versions"] = versions
    return found


def events(*pairs: tuple[str, str], kind: str = "ECOSYSTEM", **extra: str) -> dict[str, Any]:
    return {"type": kind, "events": [{name: value} for name, value in pairs], **extra}


# (description, the affected entry, package type, must match, must not match)
CASES = [
    (
        "Debian DSA: introduced 0, fixed (epoch, tilde, +debNuM)",
        entry("Debian:12", "openssl", events(("introduced", "0"), ("fixed", "3.0.15-1~deb12u1"))),
        "deb",
        ["3.0.11-1~deb12u2", "3.0.15-1~deb12u0", "3.0.15-1~", "0:3.0.2-1"],
        ["3.0.15-1~deb12u1", "3.0.15-1", "3.0.16-1~deb12u1", "1:1.0-1"],
    ),
    (
        "only introduced: every later version",
        entry("Debian:12", "sudo", events(("introduced", "1.9.0-1"))),
        "deb",
        ["1.9.0-1", "1.9.13p3-1+deb12u1", "2:0.1-1"],
        ["1.8.31-1", "1.9.0~rc1-1"],
    ),
    (
        "two introduced/fixed pairs (a regression)",
        entry(
            "PyPI",
            "django",
            events(("introduced", "3.2"), ("fixed", "3.2.25"), ("introduced", "4.2"), ("fixed", "4.2.11")),
        ),
        "pypi",
        ["3.2", "3.2.24", "4.2", "4.2.10"],
        ["3.1.14", "3.2.25", "4.0", "4.1.13", "4.2rc1", "4.2.11", "5.0"],
    ),
    (
        "last_affected is inclusive",
        entry("PyPI", "pyyaml", events(("introduced", "0"), ("last_affected", "5.3.1"))),
        "pypi",
        ["3.13", "5.3", "5.3.1"],
        ["5.4", "5.3.2", "5.3.1.post0"],
    ),
    (
        "limit is exclusive",
        entry("npm", "semver", events(("introduced", "7.0.0"), ("limit", "7.5.2"), kind="SEMVER")),
        "npm",
        ["7.0.0", "7.5.1", "v7.5.1", "7.5.2-beta.1"],
        ["6.3.0", "7.0.0-rc.1", "7.5.2", "8.0.0"],
    ),
    (
        "SEMVER range with prereleases",
        entry("npm", "lodash", events(("introduced", "0"), ("fixed", "4.17.21"), kind="SEMVER")),
        "npm",
        ["4.17.20", "4.17.21-beta.1", "1.0.0"],
        ["4.17.21", "4.17.22", "5.0.0-rc.1"],
    ),
    (
        "Go: pseudo-versions and +incompatible",
        entry("Go", "github.com/docker/docker", events(("introduced", "0"), ("fixed", "24.0.9+incompatible"))),
        "golang",
        ["v20.10.27+incompatible", "v0.0.0-20230101000000-abcdefabcdef", "v24.0.8+incompatible"],
        ["v24.0.9+incompatible", "v25.0.0+incompatible"],
    ),
    (
        "Alpine: suffixes and -r revisions",
        entry("Alpine:v3.19", "openssl", events(("introduced", "0"), ("fixed", "3.1.4-r5"))),
        "apk",
        ["3.1.4-r4", "3.1.4_rc1-r9", "3.1.3-r0"],
        ["3.1.4-r5", "3.1.4_p1-r0", "3.1.5-r0"],
    ),
    (
        "RPM: epoch and release",
        entry("AlmaLinux:9", "bash", events(("introduced", "0"), ("fixed", "5.1.8-9.el9"))),
        "rpm",
        ["5.1.8-6.el9", "0:5.1.8-6.el9_1", "5.1.8~rc1-9.el9"],
        ["5.1.8-9.el9", "1:4.0-1.el9", "5.2-1.el9"],
    ),
    (
        "explicit versions only",
        entry("PyPI", "ctx", versions=["0.1.2", "0.2.2", "0.2.6"]),
        "pypi",
        ["0.1.2", "0.2.6"],
        ["0.2.0", "0.1.2.post1", "0.2.7"],
    ),
    (
        "GIT range: matches only through the versions list osv.dev fills in",
        entry(
            "PyPI",
            "tensorflow",
            events(
                ("introduced", "0"),
                ("fixed", "a1b2c3d4e5f6"),
                kind="GIT",
                repo="https://github.com/tensorflow/tensorflow",
            ),
            versions=["2.11.0", "2.11.1"],
        ),
        "pypi",
        ["2.11.0", "2.11.1"],
        ["2.12.0", "a1b2c3d4e5f6", "0"],
    ),
    (
        "an ECOSYSTEM range plus a versions list: either matches",
        entry("PyPI", "pillow", events(("introduced", "9.0.0"), ("fixed", "9.0.1")), versions=["8.4.0"]),
        "pypi",
        ["8.4.0", "9.0.0"],
        ["8.3.2", "9.0.1"],
    ),
]


@pytest.mark.parametrize(("what", "data", "kind", "hits", "misses"), CASES, ids=[case[0] for case in CASES])
def test_range_forms(what: str, data: dict[str, Any], kind: str, hits: list[str], misses: list[str]) -> None:
    affected = parse_advisory(record(data)).affected[0]
    assert [v for v in hits if not affects(affected, v, kind)] == [], f"{what}: should match"
    assert [v for v in misses if affects(affected, v, kind)] == [], f"{what}: should not match"


def test_unparsable_versions_are_not_affected_and_raise_nothing() -> None:
    affected = parse_advisory(record(entry("PyPI", "x", events(("introduced", "0"), ("fixed", "2.0"))))).affected[0]
    assert not affects(affected, "not a version!", "pypi")
    assert not affects(affected, "", "pypi")


def test_fixed_in_names_the_fix_of_the_interval_that_holds_the_version() -> None:
    affected = parse_advisory(
        record(
            entry(
                "PyPI",
                "django",
                events(("introduced", "3.2"), ("fixed", "3.2.25"), ("introduced", "4.2"), ("fixed", "4.2.11")),
            )
        )
    ).affected[0]
    assert fixed_in(affected, "4.2.1", "pypi") == ["4.2.11"]
    assert fixed_in(affected, "3.2.1", "pypi") == ["3.2.25"]
    unfixed = parse_advisory(record(entry("npm", "left-pad", events(("introduced", "0"), kind="SEMVER")))).affected[0]
    assert affects(unfixed, "1.3.0", "npm") and fixed_in(unfixed, "1.3.0", "npm") == []


@pytest.mark.parametrize(
    ("advisory", "package", "covered"),
    [
        ("Debian", "Debian:12", True),
        ("Debian:12", "Debian:12", True),
        ("Debian:11", "Debian:12", False),
        ("Alpine:v3.19", "Alpine:v3.19", True),
        ("Alpine:v3.18", "Alpine:v3.19", False),
        ("PyPI", "PyPI", True),
        ("npm", "PyPI", False),
        ("Ubuntu:22.04:LTS", "Ubuntu:22.04:LTS", True),
        ("Ubuntu", "Ubuntu:22.04:LTS", True),
    ],
)
def test_ecosystem_coverage(advisory: str, package: str, covered: bool) -> None:
    assert ecosystem_matches(advisory, package) is covered


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modified": "2026-01-01T00:00:00Z"}, "no `id`"),
        ({"id": "X-1"}, "X-1: `modified` is missing"),
        ([], "JSON object, not list"),
        (record({"package": {"ecosystem": "PyPI"}, "ranges": []}), "TEST-1.affected[0].package: `name` is missing"),
        (record(entry("PyPI", "a", {"type": "RANGE", "events": []})), "type 'RANGE' is none of"),
        (
            record(entry("PyPI", "a", events(("fixed", "1.0")))),
            "TEST-1.affected[0].ranges[0]: a range needs an `introduced`",
        ),
        (
            record(entry("PyPI", "a", {"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1"}]})),
            "exactly one",
        ),
        (record(entry("PyPI", "a", {"type": "ECOSYSTEM", "events": [{"patched": "1"}]})), "'patched' is not an event"),
        (record(entry("PyPI", "a", events(("introduced", "0"), kind="GIT"))), "a GIT range needs `repo`"),
        ({"id": "X-2", "modified": "2026-01-01T00:00:00Z", "aliases": "CVE-1"}, "`aliases` must be a list of strings"),
    ],
)
def test_malformed_records_name_the_record_and_field(data: object, message: str) -> None:
    with pytest.raises(AdvisoryError, match=None) as raised:
        parse_advisory(data)
    assert message in str(raised.value)


def test_withdrawn_records_parse_and_say_so() -> None:
    advisory = parse_advisory(record(withdrawn="2026-02-01T00:00:00Z"))
    assert advisory.withdrawn == "2026-02-01T00:00:00Z"


@pytest.mark.parametrize(
    ("extra", "affected_extra", "label", "score"),
    [
        (
            {"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]},
            {},
            "CRITICAL",
            9.8,
        ),
        ({"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"}]}, {}, "LOW", 1.8),
        (
            {
                "severity": [
                    {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}
                ]
            },
            {},
            "CRITICAL",
            9.3,
        ),
        ({"severity": [{"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:P/A:P"}]}, {}, "HIGH", 7.5),
        (
            {
                "severity": [
                    {"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"},
                    {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"},
                ]
            },
            {},
            "CRITICAL",
            9.3,
        ),
        ({"database_specific": {"severity": "MODERATE"}}, {}, "MEDIUM", None),
        ({}, {"ecosystem_specific": {"urgency": "unimportant"}}, "LOW", None),
        ({"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:X/garbage"}]}, {}, "UNKNOWN", None),
        ({}, {}, "UNKNOWN", None),
    ],
)
def test_severity(extra: dict[str, Any], affected_extra: dict[str, Any], label: str, score: float | None) -> None:
    advisory = parse_advisory(record({**entry("PyPI", "a", events(("introduced", "0"))), **affected_extra}, **extra))
    rating = severity_of(advisory)
    assert (rating.label, rating.score) == (label, score)
