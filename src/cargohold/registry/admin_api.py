"""`/api/v1/...`: the management API, for administrators only.

Users, robots, personal access tokens, policies, the audit trail, storage usage, repository
deletion, scan results and the advisory database's state: the same operations as the CLI,
through the same library calls, so both are audited alike. Credentials: basic auth, or a bearer
token holding `registry:admin:*`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..auth.scopes import ADMIN, Grant, ScopeError
from ..auth.service import Authority
from ..auth.store import AuthStoreError, Principal
from ..config import expires_at, parse_duration
from ..lifecycle.usage import delete_repository, usage_report
from ..oci import mediatypes as mt
from ..oci.errors import ErrorCode, RegistryError
from ..oci.jsontext import JSONTextError, load_json
from ..oci.manifest import parse_manifest
from ..oci.names import validate_name
from ..services import Services
from ..storage.events import Actor
from ..storage.records import ImmutableTagError
from .access import Gate, actor_of
from .http import Request, Responder
from .openapi import openapi_document

if TYPE_CHECKING:
    from ..supply.results import ScanStore

BODY_LIMIT = 64 * 1024
PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True)
class Management:
    """What the management API works on."""

    services: Services
    authority: Authority
    gate: Gate | None  # None when auth is off


Handler = Callable[[Management, Request, Actor, dict[str, str]], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class ApiRoute:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    body: dict[str, str] | None  # JSON body fields -> their JSON type, for the OpenAPI description
    status: int


_ROUTES: list[ApiRoute] = []


def route(
    method: str, pattern: str, body: dict[str, str] | None = None, status: int = 200
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _ROUTES.append(ApiRoute(method, re.compile(rf"^{PREFIX}{pattern}\Z"), handler, body, status))
        return handler

    return register


async def serve(api: Management, request: Request, res: Responder) -> None:
    if request.path == f"{PREFIX}/openapi.json" and request.method == "GET":
        await res.json(200, openapi_document(_ROUTES, PREFIX))  # public: it describes, it reveals nothing
        return
    methods = []
    for api_route in _ROUTES:
        found = api_route.pattern.match(request.path)
        if found is None:
            continue
        methods.append(api_route.method)
        if api_route.method != request.method:
            continue
        ctx = _admit(api, request)
        try:
            status, document = await api_route.handler(api, request, ctx, found.groupdict())
        except (AuthStoreError, ScopeError, ValueError) as err:
            raise RegistryError(ErrorCode.UNSUPPORTED, str(err), status=400) from None
        await res.json(status, document)
        return
    if methods:
        raise RegistryError(
            ErrorCode.UNSUPPORTED, f"use {', '.join(methods)} here", headers={"allow": ", ".join(methods)}
        )
    raise RegistryError.plain(404, f"no such endpoint: {request.path[:200]}")


def _admit(api: Management, request: Request) -> Actor:
    gate = api.gate
    if gate is None:  # auth is off: the operator chose to trust everyone who reaches the port
        return actor_of(request, "anonymous")
    caller = gate.caller(request)
    request.caller = caller
    allowed = (
        caller.token.allows(*ADMIN, "*") if caller.token else caller.identity is not None and caller.identity.admin
    )
    if not allowed:
        if caller.anonymous:
            raise RegistryError(ErrorCode.UNAUTHORIZED, headers=gate.challenge(request, "registry:admin:*"))
        gate.audit(request, caller.name, "access.admin", request.path[:200], "denied")
        raise RegistryError(ErrorCode.DENIED, f"{caller.name} is not an administrator")
    return actor_of(request, caller.name)


async def _body(request: Request) -> dict[str, Any]:
    try:
        document = load_json(await request.read_body(BODY_LIMIT) or b"{}")
    except JSONTextError as err:
        raise RegistryError(
            ErrorCode.UNSUPPORTED, f"the request body must be a JSON object: {err}", status=400
        ) from None
    if not isinstance(document, dict):
        raise RegistryError(ErrorCode.UNSUPPORTED, "the request body must be a JSON object", status=400)
    return document


def _grants(values: Any) -> tuple[Grant, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("scopes must be a list of strings such as 'repository:team/*:pull,push'")
    return tuple(Grant.parse(v) for v in values)


def principal_json(principal: Principal, api: Management) -> dict[str, Any]:
    return principal.as_json([str(p.grant) for p in api.authority.store.policies(principal.subject)])


@route("GET", "/users")
async def list_users(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """List users with their groups and scopes."""
    return 200, [principal_json(p, api) for p in api.authority.store.principals("user")]


@route("POST", "/users", {"name": "string", "password": "string", "admin": "boolean", "groups": "array"}, 201)
async def add_user(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """Create a user."""
    body = await _body(request)
    groups = body.get("groups") or []
    if not isinstance(body.get("name"), str) or not isinstance(body.get("password"), str):
        raise ValueError("give name and password")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("groups must be a list of names")
    principal = api.authority.add_user(
        ctx, body["name"], body["password"], admin=bool(body.get("admin")), groups=tuple(groups)
    )
    return 201, principal_json(principal, api)


@route("PUT", "/users/(?P<name>[^/]+)/password", {"password": "string"})
async def set_password(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """Set a user's password; their refresh tokens stop working."""
    body = await _body(request)
    if not isinstance(body.get("password"), str):
        raise ValueError("give password")
    api.authority.set_password(ctx, args["name"], body["password"])
    return 200, {"name": args["name"]}


@route("DELETE", "/users/(?P<name>[^/]+)")
async def remove_user(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """Delete a user with their policies and tokens."""
    api.authority.remove_principal(ctx, args["name"], "user")
    return 200, {"deleted": args["name"]}


@route("GET", "/robots")
async def list_robots(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """List robots with their scopes and expiry."""
    return 200, [principal_json(p, api) for p in api.authority.store.principals("robot")]


@route("POST", "/robots", {"name": "string", "scopes": "array", "expires": "string", "description": "string"}, 201)
async def create_robot(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """Create a robot; the answer holds its secret, shown only here."""
    body = await _body(request)
    if not isinstance(body.get("name"), str):
        raise ValueError("give name")
    principal, secret = api.authority.create_robot(
        ctx,
        body["name"],
        _grants(body.get("scopes")),
        expires_at(body.get("expires")),
        str(body.get("description", "")),
    )
    return 201, {**principal_json(principal, api), "secret": secret}


@route("DELETE", "/robots/(?P<name>[^/]+)")
async def remove_robot(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """Delete a robot; its secret stops working at once."""
    api.authority.remove_principal(ctx, args["name"], "robot")
    return 200, {"deleted": args["name"]}


@route("GET", "/tokens")
async def list_tokens(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """List personal access tokens and robot secrets (never the secrets); ?user= narrows."""
    return 200, [c.as_json() for c in api.authority.store.credentials(request.query("user"))]


@route("POST", "/tokens", {"user": "string", "name": "string", "expires": "string", "scopes": "array"}, 201)
async def create_token(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """Create a personal access token for a user; the answer holds it, shown only here."""
    body = await _body(request)
    if not isinstance(body.get("user"), str) or not isinstance(body.get("name"), str):
        raise ValueError("give user and name")
    scopes = body.get("scopes")
    secret = api.authority.create_token(
        ctx, body["user"], body["name"], expires_at(body.get("expires")), None if scopes is None else _grants(scopes)
    )
    return 201, {"user": body["user"], "name": body["name"], "secret": secret}


@route("DELETE", "/tokens/(?P<id>[0-9]{1,18})")
async def revoke_token(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """Revoke a token or robot secret."""
    api.authority.revoke(ctx, int(args["id"]))
    return 200, {"revoked": int(args["id"])}


@route("GET", "/policies")
async def list_policies(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """List policies."""
    policies = api.authority.store.policies()
    return 200, [p.as_json() for p in policies]


@route("POST", "/policies", {"subject": "string", "scope": "string"}, 201)
async def add_policy(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """Allow a subject (user:, group:, robot:NAME, authenticated, anonymous) a scope."""
    body = await _body(request)
    if not isinstance(body.get("subject"), str) or not isinstance(body.get("scope"), str):
        raise ValueError("give subject (user:NAME, group:NAME, robot:NAME, anonymous, authenticated) and scope")
    api.authority.add_policy(ctx, body["subject"], Grant.parse(body["scope"]))
    return 201, {"subject": body["subject"], "scope": body["scope"]}


@route("DELETE", "/policies/(?P<id>[0-9]{1,18})")
async def remove_policy(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """Delete a policy."""
    api.authority.remove_policy(ctx, int(args["id"]))
    return 200, {"deleted": int(args["id"])}


@route("GET", "/audit")
async def audit(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """The audit trail, newest first; ?since=24h&actor=&action=&target=&limit= filter it."""
    since = request.query("since")
    limit = request.query("limit") or "100"
    if not limit.isdigit() or not 0 < int(limit) <= 10_000:
        raise ValueError("limit must be a number from 1 to 10000")
    events = api.authority.store.events(
        since=time.time() - parse_duration(since) if since else None,
        actor=request.query("actor"),
        action=request.query("action"),
        target=request.query("target"),
        limit=int(limit),
    )
    return 200, [dataclasses.asdict(event) for event in events]


@route("GET", "/usage")
async def usage(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """Bytes of unique stored blobs per repository and quota namespace, with limits."""
    return 200, usage_report(api.services.meta, api.services.quotas)


@route("DELETE", "/repositories/(?P<name>.+)")
async def remove_repository(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """Delete a repository: tags, manifests, uploads; blobs go at the next GC."""
    name = validate_name(args["name"])
    try:
        deleted = delete_repository(
            api.services.meta, api.services.store, name, api.services.manifests.immutable_rule(name), ctx
        )
    except ImmutableTagError as err:
        raise RegistryError(
            ErrorCode.DENIED, f"tag {err.tag} of {name} is immutable (rule {err.rule!r}); the repository stays"
        ) from None
    if deleted is None:
        raise RegistryError(ErrorCode.NAME_UNKNOWN, f"repository {name} is not known to this registry")
    return 200, {"deleted": name, **deleted}


@route("POST", "/keys/rotate")
async def rotate_keys(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """Sign new tokens with a new key; tokens signed before stay valid until they expire."""
    return 200, {"active": api.authority.rotate_keys(ctx)}


def _scans(api: Management) -> ScanStore:
    # The scanner's stores load on the first scan request, not in every worker's start-up.
    from ..supply.results import ScanStore

    return ScanStore(api.services.database)


def _scan_view(api: Management, name: str, digest: str) -> dict[str, Any]:
    queue = _scans(api)
    stored = queue.result(digest)
    queued = queue.queued(digest)
    if stored is None:
        return {"digest": digest, "repository": name, "status": "queued" if queued else "not scanned"}
    return {**stored.to_dict(), "queued": queued}


@route("GET", "/repositories/(?P<name>.+)/manifests/(?P<reference>[^/]+)/scan")
async def scan_result(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """An image's stored catalogue summary, vulnerabilities and lint findings (for an index: each image's)."""
    name = validate_name(args["name"])
    stored = api.services.manifests.find(name, args["reference"])
    if stored.media_type not in mt.INDEXES:
        return 200, _scan_view(api, name, stored.digest)
    children = parse_manifest(stored.payload, stored.media_type).children
    return 200, {
        "digest": stored.digest,
        "repository": name,
        "manifests": [
            {**_scan_view(api, name, str(child.digest)), "platform": child.platform or {}} for child in children
        ],
    }


@route("POST", "/repositories/(?P<name>.+)/manifests/(?P<reference>[^/]+)/scan", status=202)
async def request_scan(api: Management, request: Request, ctx: Actor, args: dict[str, str]) -> tuple[int, Any]:
    """Queue a fresh catalogue and scan of an image (every image of an index)."""
    name = validate_name(args["name"])
    stored = api.services.manifests.find(name, args["reference"])
    digests = [stored.digest]
    if stored.media_type in mt.INDEXES:
        digests = [str(child.digest) for child in parse_manifest(stored.payload, stored.media_type).children]
    queue = _scans(api)
    for digest in digests:
        queue.enqueue(digest, name)
    return 202, {"queued": digests}


@route("GET", "/vulndb")
async def vulndb_state(api: Management, request: Request, ctx: Actor, _: dict[str, str]) -> tuple[int, Any]:
    """The advisory database: how many records, how recent, when imported."""
    from ..supply.advisories import AdvisoryStore

    state = AdvisoryStore(api.services.database).state()
    return 200, {**dataclasses.asdict(state), "ageDays": state.age_days(), "queued": _scans(api).pending()}
