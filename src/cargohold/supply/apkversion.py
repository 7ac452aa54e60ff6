"""Alpine's version order (apk-tools), as sort keys.

After apk-tools' src/version.c (apk-tools 2.14 / 3.x): a version is
`digits{.digits}...{letter}{_suffix{digits}}...{~hash}{-r digits}`, read as tokens, each allowed only
after the ones before it in that list. Tokens compare pairwise while both versions have the same kind
of token: numbers numerically, except that a dotted number with a leading zero compares as text
(8.2.0 < 8.2.001, after Gentoo); letters and commit hashes as text; suffixes in the order
_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p.
Where the kinds first differ, a pre-release suffix (_alpha.._rc) makes its version the older one;
otherwise the version whose token comes later in the list above (the end of the string last) is the
older one: 1.0_alpha1 < 1.0 < 1.0-r1 < 1.0~c0ffee < 1.0_p1 < 1.0a < 1.0.1.

A key is a tuple of (rank, value) pairs, one for each token, ending with the end token. The rank
is the negated token kind (a later kind sorts first), and a pre-release suffix ranks below all.
"""

from __future__ import annotations

import re

# apk-tools' token kinds, in the order they may follow each other (enum PARTS in version.c).
_INITIAL_DIGIT, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _COMMIT_HASH, _REVISION_NO, _END = range(8)
_PRE_SUFFIX_RANK = -100
_SUFFIXES = {"alpha": 1, "beta": 2, "pre": 3, "rc": 4, "cvs": 6, "svn": 7, "git": 8, "hg": 9, "p": 10}
_NO_SUFFIX = 5  # a version without a suffix sorts between _rc and _cvs

_DIGITS = re.compile(r"[0-9]+")
_SUFFIX_NAME = re.compile(r"[a-z]*")
_HEX = re.compile(r"[0-9a-fA-F]+")

ApkKey = tuple[tuple[int, object], ...]


def apk_key(version: str) -> ApkKey:
    """The key of an Alpine package version; ValueError (with the reason) for what apk calls invalid."""
    match = _DIGITS.match(version)
    if match is None:
        raise ValueError("an apk version starts with a digit")
    tokens: list[tuple[int, object]] = [(-_INITIAL_DIGIT, int(match.group()))]
    kind, at = _INITIAL_DIGIT, match.end()
    while at < len(version):
        char = version[at]
        if "a" <= char <= "z":
            _expect(kind <= _DIGIT, "a letter follows only a number", version, at)
            kind, value, at = _LETTER, char, at + 1
            tokens.append((-kind, value))
        elif char == "." or "0" <= char <= "9":
            _expect(kind in (_INITIAL_DIGIT, _DIGIT, _SUFFIX), "digits follow a number, a dot or a suffix", version, at)
            if char == ".":
                _expect(kind <= _DIGIT, "a dot follows only a number", version, at)
                at += 1
            digits = _DIGITS.match(version, at)
            _expect(digits is not None, "a dot is followed by digits", version, at)
            assert digits is not None
            text, at = digits.group(), digits.end()
            if kind == _SUFFIX:
                kind = _SUFFIX_NO
                tokens.append((-kind, int(text)))
            else:
                kind = _DIGIT
                # version.c: "if either of the digits have a leading zero, use raw string comparison"
                tokens.append((-kind, (0, text) if text[0] == "0" else (1, int(text))))
        elif char == "_":
            _expect(kind <= _SUFFIX_NO, "a suffix comes before ~hash and -rN", version, at)
            name = _SUFFIX_NAME.match(version, at + 1)
            assert name is not None  # [a-z]* always matches
            suffix = _SUFFIXES.get(name.group())
            _expect(suffix is not None, f"unknown suffix _{name.group()}", version, at)
            assert suffix is not None
            kind, at = _SUFFIX, name.end()
            tokens.append((_PRE_SUFFIX_RANK if suffix < _NO_SUFFIX else -kind, suffix))
        elif char == "~":
            _expect(kind < _COMMIT_HASH, "one ~hash, before -rN", version, at)
            hexdigits = _HEX.match(version, at + 1)
            _expect(hexdigits is not None, "~ is followed by a hexadecimal commit hash", version, at)
            assert hexdigits is not None
            kind, at = _COMMIT_HASH, hexdigits.end()
            tokens.append((-kind, hexdigits.group()))
        elif char == "-":
            revision = _DIGITS.match(version, at + 2) if version.startswith("-r", at) else None
            _expect(kind < _REVISION_NO and revision is not None, "a - starts the one -rN revision", version, at)
            assert revision is not None
            kind, at = _REVISION_NO, revision.end()
            tokens.append((-kind, int(revision.group())))
        else:
            raise ValueError(f"unexpected {char!r} at offset {at}")
    tokens.append((-_END, 0))
    return tuple(tokens)


def _expect(condition: bool, rule: str, version: str, at: int) -> None:
    if not condition:
        raise ValueError(f"{rule} (at offset {at}: {version[at : at + 12]!r})")
