"""Each ecosystem's own version order, by the purl type that names it (supply/packages.py), plus `semver`.

>>> compare("deb", "1:1.0~rc1-1", "1:1.0-1"), compare("rpm", "1.0^git1-1", "1.0-1"), compare("pypi", "1.0", "1.0.0")
(-1, 1, 0)
>>> sorted(["v1.10.0", "v1.2.0", "v0.0.0-20191109021931-daa7c04131f5"], key=lambda v: version_key("golang", v))
['v0.0.0-20191109021931-daa7c04131f5', 'v1.2.0', 'v1.10.0']

Every order works through a sort key computed once per version and cached: a scan compares each
package against the ranges of many advisories, and parsing is what costs. Keys of one kind compare
with each other only.

| kind     | order                                                                       |
| -------- | --------------------------------------------------------------------------- |
| `deb`    | dpkg's (epochs, `~`, revisions), parsed by python-debian: debversion.py     |
| `rpm`    | rpmvercmp over epoch:version-release, `~` and `^`: rpmversion.py            |
| `apk`    | apk-tools' (letters, `_alpha`.. `_p` suffixes, `~hash`, `-rN`): apkversion.py |
| `pypi`   | PEP 440 (packaging.version); legacy non-PEP 440 versions are invalid        |
| `npm`    | node-semver's, after `semver.clean` (a leading `v` / `=` is dropped)        |
| `golang` | golang.org/x/mod/semver (mandatory `v`, `+incompatible` ignored)            |
| `semver` | SemVer 2.0 as OSV `SEMVER` ranges write it (no `v`)                         |
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, get_args

import packaging.version

from .apkversion import apk_key
from .debversion import debian_key
from .rpmversion import rpm_key
from .semver import go_key, npm_key, semver_key

if TYPE_CHECKING:
    from _typeshed import SupportsDunderLT

    # Keys of one kind compare with `<` (and so sort); keys of different kinds do not meet.
    VersionKey = SupportsDunderLT[Any]

VersionKind = Literal["deb", "apk", "rpm", "pypi", "npm", "golang", "semver"]
KINDS: tuple[str, ...] = get_args(VersionKind)

# What a person calls each order, for messages.
ORDER_NAMES: dict[str, str] = {
    "deb": "Debian",
    "apk": "Alpine (apk)",
    "rpm": "RPM",
    "pypi": "PEP 440",
    "npm": "npm (SemVer)",
    "golang": "Go module",
    "semver": "SemVer 2.0",
}


class InvalidVersion(ValueError):
    """A version that its ecosystem's order cannot place."""

    def __init__(self, kind: str, version: str, reason: str = "") -> None:
        self.kind = kind
        self.version = version
        self.reason = reason
        message = f"{version!r} is not a valid {ORDER_NAMES.get(kind, kind)} version"
        super().__init__(f"{message}: {reason}" if reason else message)


def _pep440_key(version: str) -> packaging.version.Version:
    try:
        return packaging.version.Version(version)
    except packaging.version.InvalidVersion:
        raise ValueError("") from None  # packaging's message repeats the version and says no more


_KEYS: dict[str, Callable[[str], VersionKey]] = {
    "deb": debian_key,
    "apk": apk_key,
    "rpm": rpm_key,
    "pypi": _pep440_key,
    "npm": npm_key,
    "golang": go_key,
    "semver": semver_key,
}


@lru_cache(maxsize=1 << 16)
def version_key(kind: str, version: str) -> VersionKey:
    """A key that sorts `version` in its ecosystem's order; InvalidVersion when the order cannot place it.

    Keys compare (<, ==, >) with keys of the same kind only.
    """
    try:
        make = _KEYS[kind]
    except KeyError:
        raise ValueError(f"unknown version order {kind!r}; known: {', '.join(KINDS)}") from None
    if not isinstance(version, str):
        raise InvalidVersion(kind, repr(version), "a version is a string")
    try:
        return make(version)
    except ValueError as error:
        raise InvalidVersion(kind, version, str(error)) from None


def compare(kind: str, a: str, b: str) -> int:
    """-1, 0 or 1 as `a` sorts before, with or after `b` in the order of `kind`."""
    key_a, key_b = version_key(kind, a), version_key(kind, b)
    if key_a < key_b:
        return -1
    return 1 if key_b < key_a else 0


def is_valid(kind: str, version: str) -> bool:
    """Whether the order of `kind` can place `version`."""
    try:
        version_key(kind, version)
    except InvalidVersion:
        return False
    return True
