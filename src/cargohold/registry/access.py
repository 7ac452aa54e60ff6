"""The gate every /v2 request passes when auth is on: who is calling, and may they do this.

Callers present a bearer token from /token (docker, podman, skopeo, containerd, oras) or basic
credentials directly (simple clients). A caller whose token lacks an action it could get is
sent back for a wider token (401, `insufficient_scope`); a caller who may not have it at all
gets DENIED, which names the repository and the action.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ..auth.scopes import CATALOG, Scope
from ..auth.service import AuthFailed, Authority, Identity, RateLimited
from ..auth.store import ANONYMOUS
from ..auth.tokens import InvalidToken, VerifiedToken
from ..oci.errors import ErrorCode, RegistryError
from ..storage.events import Actor
from .http import Request
from .routes import LIST_CATALOG, LOGIN, Route


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated party of one request: a verified token, or an identity from basic auth."""

    name: str
    token: VerifiedToken | None = None
    identity: Identity | None = None

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS

    def may(self, repository: str, action: str) -> bool:
        if self.token is not None:
            return self.token.allows("repository", repository, action)
        return self.identity is not None and action in self.identity.actions(repository)

    def may_list_catalog(self) -> bool:
        if self.token is not None:
            return self.token.allows(*CATALOG, "*")
        return self.identity is not None and bool(self.identity.grant(_CATALOG_SCOPE))


_CATALOG_SCOPE = [Scope(*CATALOG, frozenset({"*"}))]


class _Open(Caller):
    """Every request's caller when auth is off: the operator trusts whoever reaches the port."""

    def may(self, repository: str, action: str) -> bool:
        return True

    def may_list_catalog(self) -> bool:
        return True


OPEN = _Open("-")


class Gate:
    def __init__(self, authority: Authority, realm: str | None) -> None:
        self.authority = authority
        self.service = authority.settings.service
        self.realm = realm

    def _realm(self, request: Request) -> str:
        if self.realm:
            return self.realm
        scheme = request.scope.get("scheme", "http")
        host = (request.headers.get("host") or "localhost").replace('"', "")
        return f"{scheme}://{host}/token"

    def challenge(self, request: Request, scope: str | None = None, error: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="{self._realm(request)}",service="{self.service}"'
        if scope:
            value += f',scope="{scope}"'
        if error:
            value += f',error="{error}"'
        return {"www-authenticate": value}

    def audit(
        self, request: Request, actor: str, action: str, target: str, outcome: str = "ok", detail: str = ""
    ) -> None:
        self.authority.audit(actor_of(request, actor), action, target, outcome, detail)

    def caller(self, request: Request) -> Caller:
        """Authenticate the request's credentials, if any. Bad credentials are refused here."""
        header = request.headers.get("authorization")
        if header is None:
            return Caller(ANONYMOUS, identity=self.authority.identity_for_subject(None))
        kind, _, value = header.strip().partition(" ")
        kind = kind.lower()
        value = value.strip()
        if kind == "bearer" and value:
            try:
                token = self.authority.tokens.verify(value, self.service)
            except InvalidToken as err:
                self.audit(request, ANONYMOUS, "auth.token", "bearer", "denied", str(err))
                raise RegistryError(
                    ErrorCode.UNAUTHORIZED,
                    f"{err}; log in again",
                    headers=self.challenge(request, error="invalid_token"),
                ) from None
            return Caller(token.subject, token=token)
        if kind == "basic" and value:
            username, password = decode_basic(value)
            try:
                identity = self.authority.login(username, password, client_address(request), request.request_id)
            except RateLimited as err:
                raise RegistryError(
                    ErrorCode.TOOMANYREQUESTS, str(err), headers={"retry-after": str(err.retry_after)}
                ) from None
            except AuthFailed as err:
                raise RegistryError(ErrorCode.UNAUTHORIZED, str(err), headers=self.challenge(request)) from None
            return Caller(identity.name, identity=identity)
        raise RegistryError(
            ErrorCode.UNAUTHORIZED,
            "the Authorization header must be 'Bearer <token>' or 'Basic <credentials>'",
            headers=self.challenge(request),
        )

    def admit(self, request: Request, route: Route, action: str) -> Caller:
        """The caller, if it may do `action` (from the route table) on this route; else the refusal."""
        caller = self.caller(request)
        if action == LOGIN:
            if caller.anonymous:
                raise RegistryError(ErrorCode.UNAUTHORIZED, headers=self.challenge(request))
            return caller
        if action == LIST_CATALOG:
            if not caller.may_list_catalog():
                self._refuse(request, caller, "registry:catalog:*", "registry:catalog", "list the catalog")
            return caller
        if not caller.may(route.name, action):
            self._refuse(request, caller, f"repository:{route.name}:{action}", route.name, action)
        return caller

    def _refuse(self, request: Request, caller: Caller, scope: str, target: str, action: str) -> None:
        if caller.anonymous:
            raise RegistryError(ErrorCode.UNAUTHORIZED, headers=self.challenge(request, scope))
        if caller.token is not None:
            identity = self.authority.identity_for_subject(caller.token.subject)
            could = identity is not None and (
                identity.grant(_CATALOG_SCOPE) if target == "registry:catalog" else action in identity.actions(target)
            )
            if could:  # a fresh token would carry it: send the client back for one
                raise RegistryError(
                    ErrorCode.UNAUTHORIZED,
                    f"the token does not grant {action} on {target}; ask for scope {scope}",
                    headers=self.challenge(request, scope, "insufficient_scope"),
                )
        self.audit(request, caller.name, f"access.{action}", target, "denied")
        raise RegistryError(ErrorCode.DENIED, f"{caller.name} may not {action} {target}")


def decode_basic(value: str) -> tuple[str, str]:
    try:
        username, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise RegistryError(ErrorCode.UNAUTHORIZED, "basic credentials must be base64 of 'username:password'")
    return username, password


def client_address(request: Request) -> str:
    return request.client


def actor_of(request: Request, name: str) -> Actor:
    """`name` acting through this request, as its audit events record it."""
    return Actor(name, client_address(request), request.request_id)


def caller_actor(request: Request) -> Actor:
    """Who made the request, for the audit events its changes record."""
    return actor_of(request, request.caller.name if request.caller is not OPEN else "anonymous")
