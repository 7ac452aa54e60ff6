"""RPM's version order, as sort keys.

After rpm's own rpmvercmp() (rpmio/rpmvercmp.c, rpm 4.18) and rpmverCmp() (lib/rpmver.c):

- A version is split into maximal runs of ASCII digits or ASCII letters; every other character only
  separates. `~` and `^` are tokens of their own.
- Runs compare pairwise: numbers numerically (leading zeros dropped), letters by strcmp, and a number
  is newer than letters. `~` sorts before everything, even the end of the string (1.0~rc1 < 1.0);
  `^` sorts after the end but before any run (1.0 < 1.0^git1 < 1.0.1).
- So each run is a (rank, value) pair and the string ends with an "end" pair:
  ~ (0) < end (1) < ^ (2) < letters (3) < digits (4), and tuples compare the way rpmvercmp walks.

An EVR `[epoch:]version[-release]` compares epoch (missing = 0), then version, then release, where
(as rpm 4.18's rpm.ver objects do) a missing release sorts before any release, so the order is total.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[0-9]+|[A-Za-z]+|~|\^")
_END = (1, 0)
_TILDE = (0, 0)
_CARET = (2, 0)

RpmPart = tuple[tuple[int, object], ...]
RpmKey = tuple[RpmPart, RpmPart, tuple[object, ...]]


def rpmvercmp_key(text: str) -> RpmPart:
    """The key of one version or release string under rpmvercmp."""
    tokens: list[tuple[int, object]] = []
    for token in _TOKEN.findall(text):
        if token == "~":
            tokens.append(_TILDE)
        elif token == "^":
            tokens.append(_CARET)
        elif token[0].isdigit():
            tokens.append((4, int(token)))
        else:
            tokens.append((3, token))
    tokens.append(_END)
    return tuple(tokens)


def rpm_key(evr: str) -> RpmKey:
    """The key of an `[epoch:]version[-release]`, split as rpm's parseEVR splits it."""
    if not evr:
        raise ValueError("an RPM version is not empty")
    # The epoch is the run of digits before a ':' at the start; the release follows the last '-'.
    match = re.match(r"([0-9]*):", evr)
    epoch, rest = (match.group(1) or "0", evr[match.end() :]) if match else ("0", evr)
    version, dash, release = rest.rpartition("-")
    if not dash:
        version, release = rest, ""
    release_key: tuple[object, ...] = (1, rpmvercmp_key(release)) if dash else (0,)
    return rpmvercmp_key(epoch), rpmvercmp_key(version), release_key
