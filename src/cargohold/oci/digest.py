"""Content digests (`algorithm:encoded`) as the OCI image spec defines them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import ErrorCode, RegistryError

# The image spec's grammar for any digest, and the exact shape of the registered algorithms.
_DIGEST_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_LOWER_HEX = re.compile(r"^[a-f0-9]+\Z")
SUPPORTED_ALGORITHMS = tuple(_HEX_LENGTH)


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate a digest, raising DIGEST_INVALID with the reason."""
        if not _DIGEST_GRAMMAR.match(text):
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid digest {text[:200]!r}: expected algorithm:hex")
        algorithm, encoded = text.split(":", 1)
        length = _HEX_LENGTH.get(algorithm)
        if length is None:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"unsupported digest algorithm {algorithm!r}; supported: {', '.join(SUPPORTED_ALGORITHMS)}",
            )
        if len(encoded) != length or not _LOWER_HEX.match(encoded):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"invalid {algorithm} digest {text[:200]!r}: expected {length} lowercase hex characters",
            )
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def looks_like_digest(reference: str) -> bool:
    """A manifest reference is a digest when it has a colon (tags cannot)."""
    return ":" in reference
