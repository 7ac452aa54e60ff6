"""SemVer 2.0 precedence (https://semver.org/#spec-item-11) and the two ecosystems written in it: npm and Go.

Each function turns a version into a sort key (tuples compare in SemVer precedence) or raises
ValueError with the reason. The three share one key shape, so a Go or npm package version can be
held against an OSV `SEMVER` range, whose versions are bare SemVer.
"""

from __future__ import annotations

import re

# A key: (major, minor, patch, prerelease), where prerelease is (1,) for a release, which sorts
# after (0, identifier...) for a prerelease; an identifier is (0, number, "") or (1, 0, text),
# numbers before words (spec item 11.4.3), and a shorter list of equal identifiers first (11.4.4).
SemverKey = tuple[int, int, int, tuple[object, ...]]

_NUMBER = r"0|[1-9][0-9]*"
_IDENTIFIER = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_PRERELEASE = rf"(?:{_IDENTIFIER})(?:\.(?:{_IDENTIFIER}))*"
_BUILD = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
# The grammar of semver.org's own regular expression.
_SEMVER = re.compile(rf"({_NUMBER})\.({_NUMBER})\.({_NUMBER})(?:-({_PRERELEASE}))?(?:\+({_BUILD}))?\Z")
# golang.org/x/mod/semver also takes the shorthands v1 and v1.2 (= v1.0.0, v1.2.0), without a prerelease.
_GO_SHORT = re.compile(rf"v({_NUMBER})(?:\.({_NUMBER}))?\Z")
_RELEASE: tuple[object, ...] = (1,)


def _key(match: re.Match[str]) -> SemverKey:
    prerelease = match.group(4)
    if prerelease is None:
        return int(match.group(1)), int(match.group(2)), int(match.group(3)), _RELEASE
    identifiers = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in prerelease.split("."))
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), (0, *identifiers)


def semver_key(version: str) -> SemverKey:
    """SemVer 2.0 exactly: MAJOR.MINOR.PATCH[-prerelease][+build], no leading "v"; build metadata ignored."""
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(_why_not_semver(version))
    return _key(match)


def npm_key(version: str) -> SemverKey:
    """npm's order: node-semver's, after `semver.clean` (surrounding blanks and leading `=`/`v` dropped)."""
    cleaned = version.strip().lstrip("=v")
    match = _SEMVER.match(cleaned)
    if match is None:
        raise ValueError(_why_not_semver(cleaned))
    return _key(match)


def go_key(version: str) -> SemverKey:
    """Go module versions (golang.org/x/mod/semver): a mandatory "v", shorthands v1 and v1.2 allowed.

    Build metadata such as `+incompatible` is ignored; a pseudo-version (v0.0.0-20191109021931-daa7c04131f5,
    v1.2.4-0.20191109021931-daa7c04131f5) is a prerelease and sorts as one.
    """
    if not version.startswith("v"):
        raise ValueError('a Go module version starts with "v"')
    short = _GO_SHORT.match(version)
    if short is not None:
        return int(short.group(1)), int(short.group(2) or 0), 0, _RELEASE
    match = _SEMVER.match(version, 1)
    if match is None:
        raise ValueError(_why_not_semver(version[1:]))
    return _key(match)


def _why_not_semver(version: str) -> str:
    parts = version.split("+")[0].split("-")[0].split(".")
    if len(parts) != 3:
        return "expected MAJOR.MINOR.PATCH"
    if any(not part.isdigit() for part in parts):
        return "MAJOR, MINOR and PATCH are numbers"
    if any(len(part) > 1 and part.startswith("0") for part in parts):
        return "numbers have no leading zeros"
    return "bad prerelease or build identifiers (dot-separated [0-9A-Za-z-], numbers without leading zeros)"
