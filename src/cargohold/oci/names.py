"""Repository names and tags, with the distribution spec's grammars."""

from __future__ import annotations

import re

from .errors import ErrorCode, RegistryError

_NAME = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\Z")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
# Distribution caps the whole reference; a name longer than this cannot be pulled by docker.
MAX_NAME_LENGTH = 255


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(_NAME.match(name))


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise RegistryError(
            ErrorCode.NAME_INVALID, f"repository name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if not _NAME.match(name):
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"invalid repository name {name[:100]!r}: use lowercase letters, digits and separators "
            "(. _ __ -) in path components joined by /",
        )
    return name


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


def validate_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"invalid tag {tag[:200]!r}: up to 128 characters of letters, digits, _ . -, not starting with . or -",
        )
    return tag
