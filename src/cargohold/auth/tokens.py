"""Short-lived signed JWTs in the Docker token-auth format, and their verification.

Verified tokens are cached until they expire: a registry checks a token on every request,
and an ECDSA verification costs far more than the manifest lookup it guards.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from .keys import ALGORITHM, KeyRing
from .scopes import Scope

# Clocks of the processes sharing the keys may differ slightly.
LEEWAY_SECONDS = 30
_CACHE_LIMIT = 50_000


class InvalidToken(Exception):
    """A bearer token that is malformed, forged, expired, or meant for another service."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str
    kid: str
    expires: float
    access: dict[tuple[str, str], frozenset[str]]

    def allows(self, kind: str, name: str, action: str) -> bool:
        return action in self.access.get((kind, name), ())


class TokenService:
    def __init__(self, keys: KeyRing, issuer: str, ttl: float) -> None:
        self.keys = keys
        self.issuer = issuer
        self.ttl = ttl
        self._verified: dict[str, VerifiedToken] = {}

    def issue(self, subject: str, audience: str, access: list[Scope]) -> tuple[str, int, float]:
        """(token, expires_in, issued_at)."""
        kid, key = self.keys.signing_key()
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + int(self.ttl),
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(12),
            "access": [scope.claim() for scope in access],
        }
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid}), int(self.ttl), now

    def verify(self, token: str, audience: str) -> VerifiedToken:
        now = time.time()
        self.keys.follow()  # a key pruned since must stop working, cached or not
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires + LEEWAY_SECONDS > now and self.keys.holds(cached.kid):
                return cached
            del self._verified[token]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.keys.verifying_key(kid) if isinstance(kid, str) else None
            if key is None or not isinstance(kid, str):
                raise InvalidToken("the token was signed by a key this registry does not hold")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
            verified = VerifiedToken(str(claims["sub"]), kid, float(claims["exp"]), _access(claims.get("access")))
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, KeyError) as err:
            raise InvalidToken(f"the token is not valid here: {err}") from None
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified = {t: v for t, v in self._verified.items() if v.expires > now}
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
        self._verified[token] = verified
        return verified


def _access(raw: object) -> dict[tuple[str, str], frozenset[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ValueError("access claim is not a list")
    access: dict[tuple[str, str], frozenset[str]] = {}
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("actions"), list):
            raise ValueError("access entry is malformed")
        key = (str(entry.get("type")), str(entry.get("name")))
        access[key] = access.get(key, frozenset()) | frozenset(str(a) for a in entry["actions"])
    return access
