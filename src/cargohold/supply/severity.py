"""One severity rating out of what advisories write: CVSS vectors, or a database's own words for it.

Labels are CVSS's qualitative ratings (NONE, LOW, MEDIUM, HIGH, CRITICAL) plus UNKNOWN; SEVERITY_ORDER
ranks them for `--fail-on`, UNKNOWN lowest (as grype ranks it: nothing says it is serious).
"""

from __future__ import annotations

from dataclasses import dataclass

import cvss

SEVERITY_ORDER: tuple[str, ...] = ("UNKNOWN", "NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_RANK = {label: rank for rank, label in enumerate(SEVERITY_ORDER)}

# The severity types the schema gives CVSS vectors, and which of them wins a tie of scores (the newest).
CVSS_TYPES = ("CVSS_V2", "CVSS_V3", "CVSS_V4")

# Databases' own words: GHSA's database_specific.severity, Debian's urgency, Ubuntu's priority.
_WORDS = {
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


@dataclass(frozen=True, slots=True)
class Rating:
    label: str  # one of SEVERITY_ORDER
    score: float | None = None  # the CVSS base score, where a vector gave it
    vector: str | None = None
    source: str = "none"  # CVSS_V3, CVSS_V4, CVSS_V2, database_specific.severity, ecosystem_specific.urgency...


UNKNOWN = Rating("UNKNOWN")


def severity_rank(label: str) -> int:
    """The place of a label in SEVERITY_ORDER; ValueError for a label that is none of them."""
    try:
        return _RANK[label.upper()]
    except KeyError:
        raise ValueError(f"unknown severity {label!r}; expected one of {', '.join(SEVERITY_ORDER)}") from None


def at_least(rating: Rating, threshold: str) -> bool:
    """Whether a rating reaches `threshold` (a SEVERITY_ORDER label), as `--fail-on` asks."""
    return severity_rank(rating.label) >= severity_rank(threshold)


def rate_vector(kind: str, vector: str) -> Rating | None:
    """The rating of one CVSS vector of severity type `kind`; None for another type or a malformed vector."""
    try:
        if kind == "CVSS_V3":
            v3 = cvss.CVSS3(vector)
            score, label = float(v3.base_score), str(v3.severities()[0])
        elif kind == "CVSS_V4":
            v4 = cvss.CVSS4(vector)
            score, label = float(v4.base_score), str(v4.severity)
        elif kind == "CVSS_V2":
            v2 = cvss.CVSS2(vector)
            score, label = float(v2.base_score), str(v2.severities()[0])
        else:
            return None
    except (cvss.CVSSError, ValueError, KeyError, IndexError):
        return None  # a malformed vector says nothing; the other sources may
    return Rating(label.upper(), score, vector, kind)


def rate_word(word: str, source: str) -> Rating:
    """A database's word for severity ("HIGH", "MODERATE", Debian's "unimportant", "not yet assigned"...)."""
    label = _WORDS.get(word.strip().rstrip("*").strip().lower())
    return Rating(label, None, None, source) if label else Rating("UNKNOWN", None, None, source)


def highest(ratings: list[Rating]) -> Rating | None:
    """The highest-scored rating; of equal scores the newest CVSS version's."""
    if not ratings:
        return None
    return max(ratings, key=lambda r: (r.score if r.score is not None else -1.0, CVSS_TYPES.index(r.source)))
