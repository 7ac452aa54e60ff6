"""`/token`: the Docker token-auth endpoint built into the registry.

GET with optional basic credentials (docker, podman, skopeo, containerd), and POST with the
OAuth2 `password` and `refresh_token` grants that `docker login` uses once it holds an
identity token. Either way the token grants the intersection of what was asked and what the
caller may do; asking for more than allowed is not an error, the token just carries less.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from ..auth.scopes import Scope, ScopeError
from ..auth.service import AuthFailed, Authority, Identity, RateLimited
from ..oci.errors import ErrorCode, RegistryError
from .access import actor_of, client_address, decode_basic
from .http import Request, Responder

FORM_LIMIT = 64 * 1024


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.error, self.description, self.headers = status, error, description, headers or {}
        super().__init__(description)


async def serve(authority: Authority, request: Request, res: Responder) -> None:
    if request.method not in ("GET", "POST"):
        raise RegistryError(ErrorCode.UNSUPPORTED, "use GET or POST on /token", headers={"allow": "GET, POST"})
    try:
        if request.method == "GET":
            document = _get(authority, request)
        else:
            form = parse_qs((await request.read_body(FORM_LIMIT)).decode("utf-8", "replace"), keep_blank_values=True)
            document = _post(authority, request, form)
    except OAuthError as err:
        body: dict[str, object] = {"error": err.error, "error_description": err.description}
        # Docker-style clients read `errors`; OAuth2 clients read `error`.
        body["errors"] = [{"code": _CODES.get(err.status, "DENIED"), "message": err.description}]
        await res.json(err.status, body, err.headers)
        return
    await res.json(200, document, {"cache-control": "no-store", "pragma": "no-cache"})


_CODES = {400: "UNSUPPORTED", 401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS"}


def _params(request: Request) -> dict[str, list[str]]:
    return parse_qs(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _one(params: dict[str, list[str]], key: str) -> str:
    values = params.get(key)
    return values[0] if values else ""


def _scopes(authority: Authority, params: dict[str, list[str]]) -> list[Scope]:
    service = _one(params, "service")
    served = authority.settings.service
    if service and service != served:
        raise OAuthError(400, "invalid_request", f"this token server serves {served!r}, not {service!r}")
    try:
        return Scope.parse_many(params.get("scope", []))
    except ScopeError as err:
        raise OAuthError(400, "invalid_scope", str(err)) from None


def _login(authority: Authority, request: Request, username: str, password: str) -> Identity:
    try:
        return authority.login(username, password, client_address(request), request.request_id)
    except RateLimited as err:
        raise OAuthError(429, "too_many_requests", str(err), {"retry-after": str(err.retry_after)}) from None
    except AuthFailed as err:
        raise OAuthError(401, "invalid_grant", str(err), {"www-authenticate": 'Basic realm="cargohold"'}) from None


def _get(authority: Authority, request: Request) -> dict[str, object]:
    params = _params(request)
    scopes = _scopes(authority, params)
    header = request.headers.get("authorization", "")
    kind, _, value = header.strip().partition(" ")
    if kind.lower() == "basic" and value.strip():
        try:
            username, password = decode_basic(value.strip())
        except RegistryError as err:
            raise OAuthError(401, "invalid_request", err.message) from None
        identity = _login(authority, request, username, password)
    elif header:
        raise OAuthError(401, "invalid_request", "send basic credentials, or none for anonymous access")
    else:
        anonymous = authority.identity_for_subject(None)
        assert anonymous is not None
        identity = anonymous
    document = _token_document(authority, identity, scopes)
    document["token"] = document["access_token"]
    if _one(params, "offline_token") == "true" and identity.principal is not None:
        document["refresh_token"] = _refresh_token(authority, request, identity, _one(params, "client_id"))
    return document


def _post(authority: Authority, request: Request, form: dict[str, list[str]]) -> dict[str, object]:
    grant_type = _one(form, "grant_type")
    scopes = _scopes(authority, {"service": form.get("service", []), "scope": form.get("scope", [])})
    if grant_type == "password":
        identity = _login(authority, request, _one(form, "username"), _one(form, "password"))
    elif grant_type == "refresh_token":
        try:
            identity = authority.refresh(_one(form, "refresh_token"))
        except AuthFailed as err:
            raise OAuthError(401, "invalid_grant", str(err)) from None
    else:
        raise OAuthError(400, "unsupported_grant_type", "grant_type must be 'password' or 'refresh_token'")
    document = _token_document(authority, identity, scopes)
    document["token_type"] = "Bearer"
    if grant_type == "password" and _one(form, "access_type") == "offline":
        document["refresh_token"] = _refresh_token(authority, request, identity, _one(form, "client_id"))
    elif grant_type == "refresh_token":
        document["refresh_token"] = _one(form, "refresh_token")
    return document


def _token_document(authority: Authority, identity: Identity, scopes: list[Scope]) -> dict[str, object]:
    token, expires_in, issued_at, granted = authority.issue_token(identity, scopes)
    return {
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued_at)),
        "scope": " ".join(str(scope) for scope in granted),
    }


def _refresh_token(authority: Authority, request: Request, identity: Identity, client_id: str) -> str:
    token = authority.issue_refresh_token(identity, client_id)
    authority.audit(
        actor_of(request, identity.name), "auth.login", identity.name, detail=f"refresh token for {client_id[:64]}"
    )
    return token
