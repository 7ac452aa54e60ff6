"""Registry authentication: anonymous, basic, and docker's bearer-token flow.

On a 401 the registry's `WWW-Authenticate` says what it wants. `Basic` gets the stored
credentials on every request. `Bearer realm=...,service=...,scope=...` means: GET the realm with
`service` and every `scope` the operation needs (`repository:team/app:pull,push`, plus
`repository:other:pull` for a cross-repository mount), with basic credentials if there are any,
and send the token it returns. Tokens are cached per set of scopes, so a push asks for the wider
scope once and a later pull reuses nothing it should not.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass

import httpx

from ..oci.challenge import Challenge, merge_scopes, parse_challenge
from .credentials import Credentials
from .errors import AuthError, ClientError


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Authorization headers for one registry; learns the scheme from its challenges."""

    def __init__(self, registry: str, credentials: Credentials | None, http: httpx.AsyncClient) -> None:
        self.registry = registry
        self.credentials = credentials
        self.http = http
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = asyncio.Lock()
        self.token_requests: list[tuple[str, ...]] = []  # scopes asked for, for tests and --debug

    def _basic(self) -> str:
        assert self.credentials is not None
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    async def headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """What to send on a request that needs `scopes`, given what the registry asked for so far."""
        if self.challenge is None:
            return {}
        if self.challenge.scheme == "basic":
            return {"authorization": self._basic()} if self.credentials else {}
        if self.challenge.scheme == "bearer":
            token = await self._token(merge_scopes(*scopes))
            return {"authorization": f"Bearer {token}"} if token else {}
        return {}

    async def on_unauthorized(self, header: str | None, scopes: tuple[str, ...], sent_auth: bool = True) -> bool:
        """A 401 arrived for a request (sent with or without credentials); True when a retry can help."""
        if not header:
            return False
        challenge = parse_challenge(header)
        if challenge.scheme not in ("basic", "bearer"):
            raise AuthError(f"{self.registry} asks for unsupported authentication {challenge.scheme!r}")
        first = self.challenge is None or self.challenge.scheme != challenge.scheme
        self.challenge = challenge
        if challenge.scheme == "basic":
            return (first or not sent_auth) and self.credentials is not None
        # a rejected token may have expired or lacked a scope: fetch a fresh one (the caller retries once)
        self._tokens.pop(merge_scopes(*scopes), None)
        return True

    async def _token(self, scopes: tuple[str, ...]) -> str:
        async with self._lock:
            cached = self._tokens.get(scopes)
            if cached and cached.expires > time.monotonic():
                return cached.value
            token = await self._fetch_token(scopes)
            self._tokens[scopes] = token
            return token.value

    async def _fetch_token(self, scopes: tuple[str, ...]) -> _Token:
        assert self.challenge is not None
        realm = self.challenge.params.get("realm")
        if not realm:
            raise AuthError(f"{self.registry} sent a Bearer challenge without a realm")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in self.challenge.params:
            params.append(("service", self.challenge.params["service"]))
        params.extend(("scope", scope) for scope in scopes)
        self.token_requests.append(scopes)
        try:
            if self.credentials is not None and self.credentials.identity_token:
                # docker's stored login: the OAuth2 refresh grant, scopes space-separated
                form = {
                    **({"service": self.challenge.params["service"]} if "service" in self.challenge.params else {}),
                    "grant_type": "refresh_token",
                    "refresh_token": self.credentials.identity_token,
                    "client_id": "cargohold",
                    "scope": " ".join(scopes),
                }
                response = await self.http.post(realm, data=form)
            else:
                headers = {"authorization": self._basic()} if self.credentials else {}
                response = await self.http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as err:
            raise ClientError(f"cannot reach the token server {realm} of {self.registry}: {err}") from None
        if response.status_code in (400, 401, 403) and self.credentials and self.credentials.identity_token:
            raise AuthError(
                f"the token server of {self.registry} refused the stored login (expired or revoked); log in again"
            )
        if response.status_code in (401, 403):
            who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
            raise AuthError(f"the token server of {self.registry} refused {who} ({response.status_code})")
        if response.status_code != 200:
            raise AuthError(f"the token server of {self.registry} answered {response.status_code}")
        try:
            body = response.json()
            value = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise AuthError(f"the token server of {self.registry} sent no usable token") from None
        if not isinstance(value, str) or not value:
            raise AuthError(f"the token server of {self.registry} sent no token")
        # renew a little early, so a token never expires between sending and arriving
        return _Token(value, time.monotonic() + max(lifetime - 10, lifetime / 2))
