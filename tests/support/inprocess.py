"""The registry application called in process, through httpx's ASGI transport: no socket, no
process start. For API-level tests only; whatever needs the real HTTP server (kill -9, worker
processes, real clients, TLS, malformed framing) uses `servers.Cargohold`."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx

from cargohold.config import load_config
from cargohold.registry.app import Registry

BASE_URL = "http://registry.test"


class _SyncASGITransport(httpx.BaseTransport):
    """httpx's ASGI transport is async only; this runs it on an event loop thread of its own so
    the tests' synchronous clients can use it, as they use a real server."""

    def __init__(self, app: Registry) -> None:
        self._inner = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="asgi-loop", daemon=True)
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def call() -> tuple[int, httpx.Headers, bytes]:
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self._inner.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        status, headers, content = asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=60)
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        pass  # the loop outlives clients: one registry serves many

    def shut_down(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class InProcessRegistry:
    """A registry over its own data directory, with `CARGOHOLD_*` settings as a server takes them."""

    kind = "cargohold-in-process"
    url = BASE_URL

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data = workdir / "data"
        self.extra_env = {"CARGOHOLD_AUTH": "off", **(extra_env or {})}
        self.app: Registry | None = None
        self._transport: _SyncASGITransport | None = None

    def start(self) -> InProcessRegistry:
        config = load_config(environ={**self.extra_env, "CARGOHOLD_DATA": str(self.data)})
        self.app = Registry(config)
        self._transport = _SyncASGITransport(self.app)
        return self

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.shut_down()
            self._transport = None
        if self.app is not None:
            self.app.services.close()
            self.app.authority.close()
            self.app = None

    def client(self, **kwargs: object) -> httpx.Client:
        assert self._transport is not None, "start() the registry first"
        return httpx.Client(base_url=BASE_URL, transport=self._transport, timeout=30, **kwargs)  # type: ignore[arg-type]
