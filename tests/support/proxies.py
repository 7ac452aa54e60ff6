"""Misbehaving network and servers for the client's failure tests: a TCP proxy that counts the bytes
clients send and cuts a connection once a byte count is reached, and a registry that lies."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.servers import free_port, serve_in_background, shut_down


class CuttingProxy:
    """Forwards 127.0.0.1:port to an upstream port; counts client->upstream bytes; can cut once."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.sent = 0  # bytes forwarded to the upstream, all connections
        self.cut_at: int | None = None  # cut the connection carrying the byte at this count
        self.cuts = 0
        self.refusing = False  # the upstream "down": every connection is reset
        self.stalled = False  # the upstream "hung": what clients send goes nowhere, nothing comes back
        self._open: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CuttingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        def close() -> None:
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(close)
        self._thread.join(10)

    def go_down(self) -> None:
        """From now on, as if the upstream had gone away: open connections are reset, new ones
        too (clients keep pooled connections, so refusing only new ones would not be enough)."""

        def reset() -> None:
            self.refusing = True
            for writer in list(self._open):
                writer.transport.abort()

        self.loop.call_soon_threadsafe(reset)

    def come_back(self) -> None:
        def restore() -> None:
            self.refusing = self.stalled = False
            for writer in list(self._open):  # connections a stall left hanging
                writer.transport.abort()

        self.loop.call_soon_threadsafe(restore)

    def stall(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "stalled", True)

    def cut_after(self, more_bytes: int) -> None:
        """Cut the connection that carries the byte `more_bytes` from now on."""
        self.cut_at = self.sent + more_bytes

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.add(writer)

        async def upstream() -> None:
            while data := await reader.read(256 * 1024):
                if self.stalled:
                    continue
                if self.cut_at is not None and self.sent + len(data) >= self.cut_at:
                    keep = self.cut_at - self.sent
                    up_writer.write(data[:keep])
                    self.sent += keep
                    self.cut_at = None
                    self.cuts += 1
                    await up_writer.drain()
                    writer.transport.abort()
                    up_writer.transport.abort()
                    return
                up_writer.write(data)
                self.sent += len(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(256 * 1024):
                if self.stalled:
                    continue
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        self._open.discard(writer)
        writer.transport.abort()
        up_writer.transport.abort()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LyingRegistry:
    """Serves one image, `lie/app:v1`, whose layer comes back with wrong bytes (same length), and a manifest
    that, asked for by its digest, returns other bytes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        self.layer = b"the true layer " * 5000
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": _digest(self.config),
                    "size": len(self.config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _digest(self.layer),
                        "size": len(self.layer),
                    }
                ],
            }
        ).encode()
        self.digest = _digest(self.manifest)
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> LyingRegistry:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: bytes, content_type: str = "application/octet-stream") -> None:
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/v2/":
                    self._send(b"{}", "application/json")
                elif path == "/v2/lie/app/manifests/v1":
                    self._send(outer.manifest, "application/vnd.oci.image.manifest.v1+json")
                elif path == f"/v2/lie/app/manifests/{outer.digest}":
                    self._send(outer.manifest + b"\n", "application/vnd.oci.image.manifest.v1+json")
                elif path == f"/v2/lie/app/blobs/{_digest(outer.config)}":
                    self._send(outer.config)
                elif path == f"/v2/lie/app/blobs/{_digest(outer.layer)}":
                    self._send(outer.layer.replace(b"true", b"fake"))
                else:
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()

            do_HEAD = do_GET

        self.server = serve_in_background(ThreadingHTTPServer(("127.0.0.1", self.port), Handler))
        return self

    def stop(self) -> None:
        shut_down(self.server)


class FlakyRegistry:
    """Serves `flaky/app:v1` (the liar's true image), but answers its manifest GET with 503 twice and then
    429, each with `Retry-After: 1`, before it succeeds. `hits` counts the manifest requests."""

    def __init__(self, failures: tuple[int, ...] = (503, 503, 429)) -> None:
        self.image = LyingRegistry()
        self.failures = list(failures)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.hits = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> FlakyRegistry:
        outer = self
        image = self.image

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in {**headers, "content-length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/v2/":
                    self._send(200, b"{}", {"content-type": "application/json"})
                elif path == "/v2/flaky/app/manifests/v1":
                    outer.hits += 1
                    if outer.hits <= len(outer.failures):
                        status = outer.failures[outer.hits - 1]
                        self._send(
                            status, b'{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}', {"retry-after": "1"}
                        )
                    else:
                        self._send(200, image.manifest, {"content-type": "application/vnd.oci.image.manifest.v1+json"})
                elif path == f"/v2/flaky/app/blobs/{_digest(image.config)}":
                    self._send(200, image.config, {})
                else:
                    self._send(404, b"", {})

        self.server = serve_in_background(ThreadingHTTPServer(("127.0.0.1", self.port), Handler))
        return self

    def stop(self) -> None:
        shut_down(self.server)
