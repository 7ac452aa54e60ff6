"""Password hashing and high-entropy credential secrets.

Passwords people choose get argon2id (slow on purpose). Robot secrets, personal access tokens
and refresh tokens are 256 random bits, so a plain SHA-256 of them is safe to store and lets
the server find the credential by its digest without a slow hash on every request.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Prefixes make a leaked secret recognisable to secret scanners and to people.
ROBOT_PREFIX = "chr_"
TOKEN_PREFIX = "chp_"
REFRESH_PREFIX = "chf_"
SECRET_PREFIXES = (ROBOT_PREFIX, TOKEN_PREFIX, REFRESH_PREFIX)


@functools.cache
def _dummy_hash() -> str:
    """A hash of a password nobody has, verified when the user does not exist so that the
    answer takes as long either way and does not reveal which user names exist. Made on first
    use: every process that imports this module (each CLI command) would pay for it otherwise."""
    return _hasher.hash(secrets.token_urlsafe(16))


def prepare_logins() -> None:
    """Make the dummy hash now (a server does this at start), so that not even the first
    login of an unknown user answers faster than one of a known user."""
    _dummy_hash()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_secret(text: str) -> bool:
    return text.startswith(SECRET_PREFIXES)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
