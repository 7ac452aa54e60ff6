"""The Distribution API's one route table: for each endpoint and method, the handler and the
action the caller needs. The access gate reads the action, the dispatch the handler; adding
an endpoint is a line here (and its path in `routes.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..oci.errors import ErrorCode, RegistryError
from ..services import Services
from . import blobs, manifests, uploads
from .http import Request, Responder
from .pagination import page
from .routes import LIST_CATALOG, LOGIN, Route

# A handler translates one request into a service call and its result into the answer.
Handler = Callable[[Services, Request, Responder, Route], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Operation:
    handler: Handler
    action: str  # pull, push or delete on the route's repository; or LOGIN, LIST_CATALOG


async def _base(services: Services, request: Request, res: Responder, route: Route) -> None:
    await res.json(200, {}) if request.method == "GET" else await res.empty(200)


async def _catalog(services: Services, request: Request, res: Responder, route: Route) -> None:
    names, headers = page(request, services.manifests.repositories)
    await res.json(200, {"repositories": names}, headers)


ENDPOINTS: dict[str, dict[str, Operation]] = {
    "base": {"GET": Operation(_base, LOGIN), "HEAD": Operation(_base, LOGIN)},
    "catalog": {"GET": Operation(_catalog, LIST_CATALOG)},
    "manifest": {
        "GET": Operation(manifests.get, "pull"),
        "HEAD": Operation(manifests.get, "pull"),
        "PUT": Operation(manifests.put, "push"),
        "DELETE": Operation(manifests.delete, "delete"),
    },
    "blob": {
        "GET": Operation(blobs.get, "pull"),
        "HEAD": Operation(blobs.get, "pull"),
        "DELETE": Operation(blobs.delete, "delete"),
    },
    "uploads": {"POST": Operation(uploads.start, "push")},
    "upload": {
        "PATCH": Operation(uploads.patch, "push"),
        "PUT": Operation(uploads.finish, "push"),
        "GET": Operation(uploads.status, "push"),
        "DELETE": Operation(uploads.cancel, "push"),
    },
    "tags": {"GET": Operation(manifests.tags, "pull")},
    "referrers": {"GET": Operation(manifests.referrers, "pull")},
}


def operation(route: Route, method: str) -> Operation:
    """What `method` does on `route`; UNSUPPORTED (405, with Allow) for a method it does not take,
    before any credential is looked at or any handler runs."""
    operations = ENDPOINTS[route.endpoint]
    found = operations.get(method)
    if found is None:
        allowed = ", ".join(operations)
        raise RegistryError(
            ErrorCode.UNSUPPORTED, f"method {method} is not allowed here; use {allowed}", headers={"allow": allowed}
        )
    return found
