"""The registry ASGI application: dispatch, error mapping and the access log; the maintenance
jobs it starts are `lifecycle.scheduler`'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time

from ..auth.credentials import prepare_logins
from ..auth.service import Authority
from ..config import Config, load_config
from ..lifecycle.scheduler import Maintenance
from ..oci.errors import ErrorCode, RegistryError
from ..oci.names import validate_name
from ..services import Services
from ..services.uploads import DRAIN_LIMIT
from ..storage.backends import storage_failure
from ..storage.records import BackendUnavailable
from . import admin_api, token_endpoint
from .access import OPEN, Gate
from .accesslog import AccessLog
from .endpoints import operation
from .forwarded import client_address as forwarded_client
from .http import IncompleteBody, Receive, Request, Responder, Scope, Send
from .routes import match

log = logging.getLogger("cargohold.registry")


class Registry:
    """The ASGI entry point: one process's services, access gate and access log."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.trusted_proxies = config.proxy_networks  # whose X-Forwarded-For names the client
        self.services = Services(config)
        self.access_log = AccessLog() if config.access_log else None
        self.authority = Authority.open(config, self.services.database)
        self.gate = Gate(self.authority, config.auth_realm or None) if config.auth else None
        self.management = admin_api.Management(self.services, self.authority, self.gate)
        if config.auth:
            # ~0.1 s of argon2: made beside the start, not before the first answer.
            threading.Thread(target=prepare_logins, name="prepare-logins", daemon=True).start()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request = Request(scope, receive, self.config.body_timeout)
        request.request_id = request_id(request.headers.get("x-request-id"))
        request.caller = OPEN
        if self.trusted_proxies:
            request.client = forwarded_client(
                request.client, request.headers.get("x-forwarded-for"), self.trusted_proxies
            )
        res = Responder(send, request.request_id)
        try:
            await self._dispatch(request, res)
        except RegistryError as err:
            await self._refuse(request, res, err)
        except IncompleteBody as cut:
            # The client may still listen (a half-closed socket, a malformed chunk): tell it.
            await self._refuse(request, res, cut.refusal())
        except Exception as err:
            await self._fail(request, res, err)
        if self.access_log is not None:
            self.access_log.write(
                request.client,
                request.caller.name,
                request.method,
                request.path,
                res.status,
                res.sent_bytes,
                time.perf_counter() - started,
                request.request_id,
            )

    async def _fail(self, request: Request, res: Responder, err: Exception) -> None:
        """Anything else raised while answering: a storage failure (the whole API, /token and
        /api/ included, answers it alike) or a bug."""
        failure = storage_failure(err)
        if failure is not None:
            await self._drain(request)
        if isinstance(failure, BackendUnavailable):
            # One line, no traceback: an outage would otherwise bury the log in identical ones.
            log.warning("503 on %s %s: %s", request.method, request.path, failure)
            retry = {"retry-after": str(failure.retry_after)}
            await self._refuse(request, res, RegistryError(ErrorCode.UNAVAILABLE, str(failure), headers=retry))
        elif failure is not None:
            log.error("storage full on %s %s: %s", request.method, request.path, failure)
            full = RegistryError.plain(507, "the registry's storage is full; nothing was stored")
            await self._refuse(request, res, full)
        else:
            log.exception("internal error on %s %s", request.method, request.path)
            await self._refuse(request, res, RegistryError.plain(500, "internal error; see the server log"))

    @staticmethod
    async def _drain(request: Request) -> None:
        """Read what is left of a refused request's body (up to a limit) before answering: a
        balancer streaming it to us (nginx) turns an answer sent while it still writes into a
        502, and the client must see the retryable 503 or 507 instead."""
        with contextlib.suppress(IncompleteBody, RegistryError):
            await request.discard_body(DRAIN_LIMIT)

    async def _refuse(self, request: Request, res: Responder, err: RegistryError) -> None:
        if res.status:  # the response already started; nothing more can be said
            return
        if request.body_left() and "connection" not in err.headers:
            # Refused before its whole body arrived (the object store went down mid-PATCH): the
            # connection closes after this answer, so say so, or a client that reuses it sends
            # its next request into a closed socket ("Server disconnected").
            err.headers = {**err.headers, "connection": "close"}
        await res.error(err, head=request.method == "HEAD")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        jobs: list[asyncio.Task[None]] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                services = self.services
                jobs = Maintenance(
                    self.config, services.store, services.immutable_tags, services.pool, services.database
                ).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for job in jobs:
                    job.cancel()
                self.services.close()
                self.authority.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, request: Request, res: Responder) -> None:
        route = match(request.path)
        if route is None:
            if request.path == "/token" and self.gate is not None:
                await token_endpoint.serve(self.authority, request, res)
                return
            if request.path.startswith("/api/"):
                await admin_api.serve(self.management, request, res)
                return
            raise RegistryError.plain(404, f"no such endpoint: {request.path[:200]}")
        if route.name:
            validate_name(route.name)  # before the gate, which names the repository in challenges and audit
        op = operation(route, request.method)
        if self.gate is not None:
            request.caller = self.gate.admit(request, route, op.action)
        await op.handler(self.services, request, res, route)


def request_id(offered: str | None) -> str:
    """A proxy's request id when it is a plain token (it goes into logs), otherwise a new one."""
    if offered and len(offered) <= 64 and offered.replace("-", "").isalnum() and offered.isascii():
        return offered
    return secrets.token_hex(8)


def create_app() -> Registry:
    """Factory for ASGI servers started in worker processes: config comes from the environment."""
    from ..server import configure_logging

    config = load_config()
    configure_logging(config.log_level)
    return Registry(config)
