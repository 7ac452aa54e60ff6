"""Secrets at rest: what the database keeps of a private key is sealed with AES-256-GCM under a
key derived from the secret file, so a dump or a backup of the database alone reveals nothing.

The secret file holds 32 random bytes (base64). The embedded default makes one under the data
directory on first start; replicas that share a database must be given the same file.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_BYTES = 32
NONCE_BYTES = 12


class SealingError(Exception):
    """A secret file that cannot be used, or a sealed value this secret did not seal."""


def load_secret(path: Path, create: bool = True) -> bytes:
    """The secret in `path`, made (readable by its owner only) when absent and `create`."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a name of its own, then linked into place: a process starting beside
        # this one (another worker) sees no file or the whole secret, never an empty file.
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as out:  # mkstemp makes it readable by its owner only
                out.write(base64.b64encode(os.urandom(SECRET_BYTES)).decode() + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.link(partial, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            os.unlink(partial)
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise SealingError(f"cannot read the secret file {path}: {err.strerror}") from None
    try:
        secret = base64.b64decode(text, validate=True)
    except binascii.Error:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise SealingError(
            f"the secret file {path} must hold {SECRET_BYTES} random bytes in base64 "
            "(make one with: head -c 32 /dev/urandom | base64)"
        )
    return secret


class Sealer:
    """Seals and opens values for one purpose; the purpose and each value's name are bound in,
    so a sealed value copied to another row or another use does not open."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"cargohold {purpose}".encode()).derive(secret)
        self._aead = AESGCM(key)

    def seal(self, name: str, plaintext: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, name.encode())).decode()

    def open(self, name: str, sealed: str) -> bytes:
        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], name.encode())
        except InvalidTag:
            raise SealingError(f"{name} was sealed with another secret") from None
