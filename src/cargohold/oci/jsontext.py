"""Strict JSON for documents exchanged between systems (manifests, API bodies).

Python's `json.loads` is lenient where a registry must not be: given bytes it guesses UTF-16
or UTF-32, it accepts `NaN` and `Infinity`, keeps the last of duplicate keys (another parser
may keep the first: two readers would see two documents), and recurses without a limit of
its own. This module accepts exactly RFC 8259 JSON text in UTF-8 without a byte-order mark
(section 8.1), with unique object keys and a bounded nesting depth.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# Real manifests nest 4-5 levels; this is generous and still far from any recursion limit.
MAX_DEPTH = 100

# A JSON string (unrolled, so matching stays linear however hostile the text), and anything
# that is not a bracket: what is left once both are removed is the bracket skeleton.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


class JSONTextError(ValueError):
    """The bytes are not strict JSON; the message says why, for a person."""


def _reject_constant(name: str) -> Any:
    raise JSONTextError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONTextError(f"the key {key[:100]!r} appears twice in one object")
            seen.add(key)
    return document


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (strings are not looked into)."""
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, skeleton)), default=0)


def load_json(payload: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON or raise JSONTextError."""
    if payload.startswith(_BOMS):
        raise JSONTextError("it begins with a byte-order mark; JSON exchanged between systems is UTF-8 without one")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JSONTextError(f"it is not UTF-8 (byte {err.start} is not valid UTF-8)") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JSONTextError(f"it nests {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except JSONTextError:
        raise
    except ValueError as err:
        raise JSONTextError(f"it is not valid JSON: {err}") from None
