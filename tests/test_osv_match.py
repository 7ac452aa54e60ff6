"""OSV records, modelled on real DSA / GHSA / PYSEC / GO / ALSA / OSS-Fuzz ones, parsed and matched.

Every range form the schema has: introduced only, introduced + fixed, several pairs, last_affected, limit,
introduced "0", SEMVER, GIT with a versions list, explicit versions only; each with the versions it
matches and the ones it does not.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from cargohold.supply.osv import (
    SEVERITY_ORDER,
    Advisory,
    AdvisoryError,
    Affected,
    affects,
    ecosystem_matches,
    fixed_in,
    parse_advisory,
    severity_of,
)
from cargohold.supply.severity import at_least, severity_rank

MODIFIED = "2024-03-01T12:00:00Z"


def _record(record_id: str, *affected: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"schema_version": "1.6.0", "id": record_id, "modified": MODIFIED, "affected": list(affected), **fields}


def _package(ecosystem: str, name: str, *ranges: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"package": {"ecosystem": ecosystem, "name": name}, "ranges": list(ranges), **fields}


def _range(kind: str, *events: tuple[str, str], **fields: Any) -> dict[str, Any]:
    return {"type": kind, "events": [{event: value} for event, value in events], **fields}


DSA = _record(
    "DSA-5532-1",
    _package(
        "Debian:12",
        "openssl",
        _range("ECOSYSTEM", ("introduced", "0"), ("fixed", "3.0.11-1~deb12u2")),
        ecosystem_specific={"urgency": "medium"},
    ),
    published="2023-10-24T00:00:00Z",
    aliases=["CVE-2023-5363"],
    summary="openssl - security update",
    references=[{"type": "ADVISORY", "url": "https://www.debian.org/security/2023/dsa-5532"}],
)

GHSA_NPM = _record(
    "GHSA-c2qf-rxjj-qqgw",
    _package(
        "npm",
        "semver",
        _range(
            "SEMVER",
            ("introduced", "7.0.0"),
            ("fixed", "7.5.2"),
            ("introduced", "6.0.0"),
            ("fixed", "6.3.1"),
            ("introduced", "0"),
            ("fixed", "5.7.2"),
        ),
    ),
    aliases=["CVE-2022-25883"],
    summary="semver vulnerable to Regular Expression Denial of Service",
    severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"}],
    database_specific={"severity": "MODERATE", "cwe_ids": ["CWE-1333"], "github_reviewed": True},
)

PYSEC = _record(
    "PYSEC-2023-74",
    _package(
        "PyPI",
        "requests",
        _range(
            "GIT",
            ("introduced", "0"),
            ("fixed", "74ea7cf7a6a27a4eeb2ae24e162bcc942a6706d5"),
            repo="https://github.com/psf/requests",
        ),
        _range("ECOSYSTEM", ("introduced", "2.3.0"), ("fixed", "2.31.0")),
        versions=["2.3.0", "2.30.0"],
    ),
    aliases=["CVE-2023-32681", "GHSA-j8r2-6x86-q33q"],
)

GO = _record(
    "GO-2023-1571",
    _package("Go", "golang.org/x/net", _range("SEMVER", ("introduced", "0"), ("fixed", "0.7.0"))),
    aliases=["CVE-2022-41723"],
    database_specific={"url": "https://pkg.go.dev/vuln/GO-2023-1571"},
)

ALSA = _record(
    "ALSA-2024:0310",
    _package("AlmaLinux:9", "openssl", _range("ECOSYSTEM", ("introduced", "0"), ("fixed", "1:3.0.7-25.el9_3"))),
    severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N"}],
)

ALPINE = _record(
    "ALPINE-CVE-2024-0727",
    _package("Alpine:v3.19", "openssl", _range("ECOSYSTEM", ("introduced", "0"), ("fixed", "3.1.4-r5"))),
)

LAST_AFFECTED = _record(
    "GHSA-h376-j262-vhq6",
    _package("PyPI", "h2db", _range("ECOSYSTEM", ("introduced", "0"), ("last_affected", "2.1.214"))),
)

UNFIXED = _record(
    "DEBIAN-CVE-2023-4039",
    _package(
        "Debian:12", "gcc-12", _range("ECOSYSTEM", ("introduced", "0")), ecosystem_specific={"urgency": "unimportant"}
    ),
)

INTRODUCED_ONLY = _record("PYSEC-2024-1", _package("PyPI", "pillow", _range("ECOSYSTEM", ("introduced", "10.0.0"))))

LIMITED = _record(
    "OSV-2024-7",
    _package("PyPI", "example", _range("ECOSYSTEM", ("introduced", "1.0"), ("limit", "2.0"), ("limit", "3.5"))),
)

GIT_WITH_VERSIONS = _record(
    "OSV-2021-777",
    {
        "package": {"ecosystem": "OSS-Fuzz", "name": "libxml2"},
        "ranges": [
            _range(
                "GIT",
                ("introduced", "d36f0d7e6dbae8bd1d8bc6ecfd5b12f3c5d7d8a8"),
                ("fixed", "e6d8ca5ec4a5bb9ebd7e5b1e2d8e3e2a7b9f4f10"),
                repo="https://gitlab.gnome.org/GNOME/libxml2",
            )
        ],
        "versions": ["v2.9.10", "v2.9.11"],
    },
)

VERSIONS_ONLY = _record(
    "MAL-2024-1234", {"package": {"ecosystem": "npm", "name": "evil-pkg"}, "versions": ["1.0.1", "1.0.2"]}
)

WITHDRAWN = _record(
    "GHSA-wxyz-0000-1111",
    _package("PyPI", "thing", _range("ECOSYSTEM", ("introduced", "0"), ("fixed", "1.0"))),
    withdrawn="2024-02-02T10:00:00Z",
)


def _affected(record: dict[str, Any], index: int = 0) -> Affected:
    return parse_advisory(record).affected[index]


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_keeps_the_record() -> None:
    advisory = parse_advisory(DSA)
    assert isinstance(advisory, Advisory)
    assert (advisory.id, advisory.modified, advisory.published) == ("DSA-5532-1", MODIFIED, "2023-10-24T00:00:00Z")
    assert advisory.aliases == ("CVE-2023-5363",) and advisory.withdrawn is None
    assert advisory.references[0].url.endswith("dsa-5532") and advisory.raw is DSA
    (affected,) = advisory.affected
    assert (affected.ecosystem, affected.name, affected.ecosystem_specific) == (
        "Debian:12",
        "openssl",
        {"urgency": "medium"},
    )
    (r,) = affected.ranges
    assert r.type == "ECOSYSTEM" and [(e.kind, e.value) for e in r.events] == [
        ("introduced", "0"),
        ("fixed", "3.0.11-1~deb12u2"),
    ]


def test_withdrawn_is_parsed_and_left_to_the_caller() -> None:
    advisory = parse_advisory(WITHDRAWN)
    assert advisory.withdrawn == "2024-02-02T10:00:00Z"
    assert affects(advisory.affected[0], "0.9", "pypi")  # the record still reads as it did; the caller drops it


def test_git_range_keeps_its_repo() -> None:
    git, ecosystem = _affected(PYSEC).ranges
    assert (git.type, git.repo, ecosystem.type, ecosystem.repo) == (
        "GIT",
        "https://github.com/psf/requests",
        "ECOSYSTEM",
        None,
    )


def _broken(change: Any) -> dict[str, Any]:
    record = copy.deepcopy(GHSA_NPM)
    change(record)
    return record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("id"), "OSV record without an id"),
        (lambda r: r.update(id=""), "OSV record without an id"),
        (lambda r: r.pop("modified"), "GHSA-c2qf-rxjj-qqgw: modified: missing"),
        (lambda r: r.update(modified="yesterday"), "modified: 'yesterday' is not an RFC 3339 date-time"),
        (lambda r: r.update(published=20240101), "published: expected a string, got int"),
        (lambda r: r.update(aliases="CVE-1"), "aliases: expected a list, got str"),
        (lambda r: r.update(affected={}), "affected: expected a list, got dict"),
        (lambda r: r["affected"].append("npm"), "affected[1]: expected an object, got str"),
        (lambda r: r["affected"][0]["package"].pop("ecosystem"), "affected[0].package.ecosystem: missing"),
        (lambda r: r["affected"][0].pop("package"), "affected[0].package: missing"),
        (
            lambda r: r["affected"][0]["ranges"][0].update(type="SEMVER2"),
            "affected[0].ranges[0].type: 'SEMVER2' is not one of",
        ),
        (
            lambda r: r["affected"][0]["ranges"][0].update(type="GIT"),
            "affected[0].ranges[0].repo: missing (required for a GIT range)",
        ),
        (
            lambda r: r["affected"][0]["ranges"][0]["events"].__setitem__(1, {"introduced": "1", "fixed": "2"}),
            "affected[0].ranges[0].events[1]: an event has exactly one of introduced, fixed, last_affected, limit;"
            " found introduced, fixed",
        ),
        (
            lambda r: r["affected"][0]["ranges"][0]["events"].__setitem__(1, {"fixd": "2"}),
            "events[1]: an event has exactly one of",
        ),
        (
            lambda r: r["affected"][0]["ranges"][0]["events"].__setitem__(1, {"fixed": 2}),
            "events[1].fixed: expected a string, got int",
        ),
        (
            lambda r: r["affected"][0]["ranges"][0].update(events=[{"fixed": "1.0.0"}]),
            "ranges[0].events: a range has at least one introduced event",
        ),
        (lambda r: r["affected"][0]["ranges"][0].update(events=[]), "ranges[0].events: a range has at least one event"),
        (
            lambda r: r["affected"][0]["ranges"][0]["events"].append({"last_affected": "7.6.0"}),
            "fixed or last_affected events, not both",
        ),
        (lambda r: r.update(severity=[{"type": "CVSS_V3"}]), "severity[0].score: missing"),
        (lambda r: r["affected"][0].update(versions=["1.0", 2]), "affected[0].versions[1]: expected a string, got int"),
        (lambda r: r.update(database_specific=["x"]), "database_specific: expected an object, got list"),
    ],
)
def test_parse_errors_name_record_and_field(change: Any, message: str) -> None:
    with pytest.raises(AdvisoryError, match=re.escape(message)):
        parse_advisory(_broken(change))


def test_parse_rejects_what_is_no_record() -> None:
    for data in ([], "GHSA-x", None):
        with pytest.raises(AdvisoryError, match="an OSV record is a JSON object"):
            parse_advisory(data)


def test_package_may_be_left_out_for_git_ranges_only() -> None:
    record = copy.deepcopy(GIT_WITH_VERSIONS)
    record["affected"][0].pop("package")
    affected = _affected(record)
    assert (affected.ecosystem, affected.name) == ("", "")


# --- matching --------------------------------------------------------------------------------------------

MATCHES = [
    # record, kind, affected versions, unaffected versions
    (
        DSA,
        "deb",
        ["3.0.9-1", "3.0.11-1~deb12u1", "0:3.0.11-1~deb12u1", "0.1"],
        ["3.0.11-1~deb12u2", "1:0.9", "3.0.11-1", "3.0.13-1~deb12u1", "1:3.0.0"],
    ),
    (
        GHSA_NPM,
        "npm",
        ["7.0.0", "7.5.1", "6.3.0", "6.0.0", "5.7.1", "0.1.0", "v7.5.1", "7.5.2-rc.1"],
        ["7.5.2", "6.3.1", "5.7.2", "6.4.0", "8.0.0", "7.0.0-rc.1"],
    ),
    (PYSEC, "pypi", ["2.3.0", "2.30.0", "2.31.0rc1", "2.10.0"], ["2.2.1", "2.31.0", "2.32.3", "3.0.0.dev1"]),
    (
        GO,
        "golang",
        ["v0.6.0", "v0.0.0-20220722155237-a158d28d115b", "v0.7.0-rc.1", "v0.1.0+incompatible"],
        ["v0.7.0", "v0.8.0", "v1.0.0"],
    ),
    (
        ALSA,
        "rpm",
        ["1:3.0.7-24.el9", "1:3.0.7-25.el9", "3.0.9-1.el9"],
        ["1:3.0.7-25.el9_3", "1:3.0.7-27.el9", "2:1.0-1"],
    ),
    (ALPINE, "apk", ["3.1.4-r4", "3.1.4", "3.1.4_rc1-r9", "3.0.12-r0"], ["3.1.4-r5", "3.1.5-r0", "3.2.0_alpha1-r0"]),
    (LAST_AFFECTED, "pypi", ["0.1", "2.1.214", "2.1.214rc1"], ["2.1.214.post1", "2.1.215", "2.2"]),
    (UNFIXED, "deb", ["12.2.0-14", "1:0", "0~"], []),
    (INTRODUCED_ONLY, "pypi", ["10.0.0", "10.2.0", "11.0"], ["9.5.0", "10.0.0rc1"]),
    (LIMITED, "pypi", ["1.0", "1.9.9", "2.0", "3.4"], ["0.9", "3.5", "4.0"]),
    (GIT_WITH_VERSIONS, "apk", ["v2.9.10", "v2.9.11"], ["v2.9.12", "2.9.10", "v2.9.9"]),
    (VERSIONS_ONLY, "npm", ["1.0.1", "1.0.2"], ["1.0.0", "1.0.3", "v1.0.1"]),
    (WITHDRAWN, "pypi", ["0.1"], ["1.0", "1.1"]),
]


@pytest.mark.parametrize(("record", "kind", "hit", "miss"), MATCHES, ids=[m[0]["id"] for m in MATCHES])
def test_affects(record: dict[str, Any], kind: str, hit: list[str], miss: list[str]) -> None:
    affected = _affected(record)
    assert [v for v in hit if not affects(affected, v, kind)] == []
    assert [v for v in miss if affects(affected, v, kind)] == []


def test_events_need_not_be_sorted() -> None:
    record = _record(
        "OSV-2024-8",
        _package(
            "PyPI",
            "x",
            _range(
                "ECOSYSTEM", ("fixed", "3.2.5"), ("introduced", "3.0.0"), ("fixed", "1.0.2"), ("introduced", "1.0.0")
            ),
        ),
    )
    affected = _affected(record)
    assert [
        v for v in ["0.9", "1.0.0", "1.0.1", "1.0.2", "2.0", "3.0.0", "3.2.4", "3.2.5"] if affects(affected, v, "pypi")
    ] == [
        "1.0.0",
        "1.0.1",
        "3.0.0",
        "3.2.4",
    ]


def test_introduced_and_fixed_at_one_version_is_an_empty_window() -> None:
    record = _record("OSV-2024-9", _package("PyPI", "x", _range("ECOSYSTEM", ("fixed", "1.0"), ("introduced", "1.0"))))
    assert not any(affects(_affected(record), v, "pypi") for v in ["0.9", "1.0", "1.1"])


def test_go_ecosystem_range_reads_osv_versions_without_v() -> None:
    record = _record(
        "GHSA-go-1", _package("Go", "github.com/a/b", _range("ECOSYSTEM", ("introduced", "1.2.0"), ("fixed", "1.2.5")))
    )
    affected = _affected(record)
    assert affects(affected, "v1.2.3", "golang") and not affects(affected, "v1.2.5", "golang")
    assert fixed_in(affected, "v1.2.3", "golang") == ["1.2.5"]


def test_unparseable_versions_are_not_affected_and_never_raise() -> None:
    pypi = _affected(PYSEC)
    assert not affects(pypi, "2.5-SNAPSHOT-x", "pypi")  # legacy, not PEP 440: not in range, not listed
    assert not affects(_affected(GO), "(devel)", "golang")
    assert not affects(_affected(DSA), "1.0 beta", "deb")
    bad_event = _record(
        "OSV-2024-10", _package("PyPI", "x", _range("ECOSYSTEM", ("introduced", "0"), ("fixed", "1..2")))
    )
    assert not affects(_affected(bad_event), "1.0", "pypi")
    bad_limit = _record(
        "OSV-2024-11", _package("PyPI", "x", _range("ECOSYSTEM", ("introduced", "0"), ("limit", "x.y")))
    )
    assert not affects(_affected(bad_limit), "1.0", "pypi")


def test_limit_star_is_infinity() -> None:
    record = _record("OSV-2024-12", _package("PyPI", "x", _range("ECOSYSTEM", ("introduced", "1.0"), ("limit", "*"))))
    assert affects(_affected(record), "99.0", "pypi") and not affects(_affected(record), "0.5", "pypi")


# --- fixed in --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "kind", "version", "fixes"),
    [
        (GHSA_NPM, "npm", "7.1.0", ["7.5.2"]),
        (GHSA_NPM, "npm", "6.1.0", ["6.3.1"]),
        (GHSA_NPM, "npm", "1.0.0", ["5.7.2"]),
        (GHSA_NPM, "npm", "7.5.2", []),
        (DSA, "deb", "3.0.9-1", ["3.0.11-1~deb12u2"]),
        (PYSEC, "pypi", "2.30.0", ["2.31.0"]),
        (GO, "golang", "v0.6.0", ["0.7.0"]),
        (LAST_AFFECTED, "pypi", "2.0", []),
        (UNFIXED, "deb", "12.2.0-14", []),
        (GIT_WITH_VERSIONS, "apk", "v2.9.10", []),
    ],
)
def test_fixed_in(record: dict[str, Any], kind: str, version: str, fixes: list[str]) -> None:
    assert fixed_in(_affected(record), version, kind) == fixes


# --- ecosystems ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("advisory", "package", "expected"),
    [
        ("Debian", "Debian:12", True),
        ("Debian:12", "Debian:12", True),
        ("Debian:12", "Debian:11", False),
        ("Debian:12", "Debian", False),
        ("Alpine:v3.19", "Alpine:v3.19", True),
        ("Alpine:v3.19", "Alpine:v3.18", False),
        ("Alpine:v3.19", "Alpine:3.19", False),
        ("Alpine", "Alpine:v3.19", True),
        ("PyPI", "PyPI", True),
        ("pypi", "PyPI", False),
        ("npm", "PyPI", False),
        ("Ubuntu:22.04:LTS", "Ubuntu:22.04:LTS", True),
        ("Ubuntu:Pro:22.04:LTS", "Ubuntu:22.04:LTS", False),
        ("Red Hat:enterprise_linux:9::baseos", "Red Hat:enterprise_linux:9::baseos", True),
        ("Rocky Linux", "Rocky Linux:9", True),
        ("Debian", "DebianX:12", False),
    ],
)
def test_ecosystem_matches(advisory: str, package: str, expected: bool) -> None:
    assert ecosystem_matches(advisory, package) is expected


# --- severity --------------------------------------------------------------------------------------------

V3_CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
V3_MEDIUM = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"  # 5.3
V4_HIGH = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:N/VA:N/SC:N/SI:N/SA:N"  # 8.7
V2_HIGH = "AV:N/AC:L/Au:N/C:P/I:P/A:P"  # 7.5


def _rated(
    severity: list[dict[str, str]] | None = None, affected_severity: list[dict[str, str]] | None = None, **fields: Any
) -> Any:
    package = _package("PyPI", "x", _range("ECOSYSTEM", ("introduced", "0")))
    if affected_severity:
        package["severity"] = affected_severity
    package.update(fields.pop("affected_fields", {}))
    advisory = parse_advisory(_record("OSV-2024-20", package, severity=severity or [], **fields))
    return severity_of(advisory, advisory.affected[0])


def test_severity_from_v3_vector() -> None:
    rating = severity_of(parse_advisory(GHSA_NPM))
    assert (rating.label, rating.score, rating.vector, rating.source) == ("MEDIUM", 5.3, V3_MEDIUM, "CVSS_V3")


def test_severity_from_v4_vector() -> None:
    rating = _rated([{"type": "CVSS_V4", "score": V4_HIGH}])
    assert (rating.label, rating.score, rating.source) == ("HIGH", 8.7, "CVSS_V4")


def test_highest_vector_wins_across_versions_and_levels() -> None:
    rating = _rated([{"type": "CVSS_V3", "score": V3_MEDIUM}, {"type": "CVSS_V4", "score": V4_HIGH}])
    assert (rating.label, rating.source) == ("HIGH", "CVSS_V4")
    rating = _rated(
        [{"type": "CVSS_V4", "score": V4_HIGH}], affected_severity=[{"type": "CVSS_V3", "score": V3_CRITICAL}]
    )
    assert (rating.label, rating.score, rating.source) == ("CRITICAL", 9.8, "CVSS_V3")


def test_severity_from_v2_vector() -> None:
    rating = _rated([{"type": "CVSS_V2", "score": V2_HIGH}])
    assert (rating.label, rating.score, rating.source) == ("HIGH", 7.5, "CVSS_V2")


def test_malformed_vector_is_passed_over() -> None:
    rating = _rated(
        [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:Q"}, {"type": "CVSS_V4", "score": "nonsense"}],
        database_specific={"severity": "HIGH"},
    )
    assert (rating.label, rating.score, rating.source) == ("HIGH", None, "database_specific.severity")
    assert _rated([{"type": "CVSS_V3", "score": "CVSS:3.1/AV:Q"}]).label == "UNKNOWN"


@pytest.mark.parametrize(
    ("word", "label"),
    [("MODERATE", "MEDIUM"), ("HIGH", "HIGH"), ("CRITICAL", "CRITICAL"), ("LOW", "LOW"), ("bogus", "UNKNOWN")],
)
def test_severity_from_ghsa_words(word: str, label: str) -> None:
    assert _rated(database_specific={"severity": word}).label == label


@pytest.mark.parametrize(
    ("urgency", "label"),
    [
        ("high", "HIGH"),
        ("medium", "MEDIUM"),
        ("low", "LOW"),
        ("unimportant", "LOW"),
        ("not yet assigned", "UNKNOWN"),
        ("low**", "LOW"),
    ],
)
def test_severity_from_debian_urgency(urgency: str, label: str) -> None:
    rating = _rated(affected_fields={"ecosystem_specific": {"urgency": urgency}})
    assert (rating.label, rating.source) == (label, "ecosystem_specific.urgency")


def test_severity_from_ubuntu_priority() -> None:
    assert _rated([{"type": "Ubuntu", "score": "negligible"}]).label == "LOW"
    assert _rated([{"type": "Ubuntu", "score": "high"}, {"type": "CVSS_V3", "score": V3_MEDIUM}]).label == "MEDIUM"


def test_severity_unknown_without_any_source() -> None:
    rating = severity_of(parse_advisory(GO))
    assert (rating.label, rating.score, rating.vector) == ("UNKNOWN", None, None)
    assert severity_of(parse_advisory(DSA), _affected(DSA)).label == "MEDIUM"  # the urgency of that package


def test_severity_order_for_fail_on() -> None:
    assert SEVERITY_ORDER == ("UNKNOWN", "NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
    high = _rated([{"type": "CVSS_V4", "score": V4_HIGH}])
    assert at_least(high, "high") and at_least(high, "MEDIUM") and not at_least(high, "CRITICAL")
    with pytest.raises(ValueError, match="unknown severity 'severe'"):
        severity_rank("severe")
