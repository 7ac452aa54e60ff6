"""Running the registry under granian, the ASGI server chosen by measurement (docs/architecture.md)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from granian._granian import SocketHolder
from granian.constants import Interfaces, Loops, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import MPServer

from .config import Config
from .listener import LISTEN_BACKLOG

# Largest body chunk granian hands the app. Bigger chunks mean fewer trips into Python per
# megabyte (upload speed); each open connection may hold one (memory under many uploads).
# 1 MiB measured the best balance: see docs/architecture.md.
HTTP1_BUFFER_BYTES = 1 << 20
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
log = logging.getLogger("cargohold.server")


class EarlyListeningServer(MPServer):
    """granian's process server (the one CPython with a GIL runs), serving on a socket bound
    before anything slow happened.

    On Linux granian lets each worker bind an SO_REUSEPORT socket of its own once it has
    loaded the app, so until then the port is closed and a client arriving while the registry
    restarts is refused (crane, for one, then gives up for good). With one worker the socket
    is instead bound and listening from the start of `cargohold serve` (`listener.listen_on`),
    without SO_REUSEPORT, and inherited by the worker: such clients wait in the kernel's
    backlog, and a second server started on the same port fails instead of silently sharing
    its connections. With several workers each keeps its own socket (the kernel balances
    connections between those, not between processes that share one); `serve` then only
    binds, without listening, to prove the port free.

    This reaches into granian's socket handling (`_init_shared_socket`, `SocketHolder`),
    hence the pinned granian version; `tests/test_startup.py` checks both behaviours.
    """

    _listener: socket.socket | None = None

    def adopt(self, listener: socket.socket) -> None:
        """Serve on `listener` (from `listener.listen_on`) if it listens; a socket that was
        only bound proved the port free, and granian's workers bind their own."""
        if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            listener.close()
            return
        self._listener = listener
        # granian's type hints (_granian.pyi) omit SocketHolder's arguments (fd, is a unix socket, backlog); its
        # server declares these attributes as None.
        self._shd = SocketHolder(listener.fileno(), False, LISTEN_BACKLOG)  # type: ignore[call-arg,assignment]
        self._sfd = listener.fileno()  # type: ignore[assignment]

    def _init_shared_socket(self) -> None:
        if self._listener is None:
            super()._init_shared_socket()
            return
        self._ssp = None
        self._sso = self._listener
        self._sso.set_inheritable(True)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def serve(config: Config, listener: socket.socket) -> None:
    """Serve on `listener` until interrupted; worker processes rebuild the config from the environment."""
    config.data.mkdir(parents=True, exist_ok=True)
    configure_logging(config.log_level)
    if config.tls_dev:
        from .devtls import default_hosts, ensure_dev_certificates, trust_instructions

        certs = ensure_dev_certificates(config.data / "tls", default_hosts(config.host))
        config.tls_cert, config.tls_key, config.tls_dev = str(certs.cert), str(certs.key), False
        log.info("%s", trust_instructions(certs.ca, config.listen))
    tls = {"ssl_cert": Path(config.tls_cert), "ssl_key": Path(config.tls_key)} if config.tls_cert else {}
    server = EarlyListeningServer(
        "cargohold.registry.app:create_app",
        factory=True,
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=config.workers,
        loop=Loops.uvloop,
        websockets=False,
        http1_settings=HTTP1Settings(max_buffer_size=HTTP1_BUFFER_BYTES),
        log_access=False,  # the app writes its own access line, with the registry's view of the request
        log_level=LogLevels(config.log_level),
        log_dictconfig={"version": 1, "disable_existing_loggers": False},
        ssl_protocol_min=SSLProtocols.tls12,
        backlog=LISTEN_BACKLOG,
        **tls,  # type: ignore[arg-type]
    )
    server.adopt(listener)
    if config.auth:
        _prepare_auth(config)
    else:
        log.warning("auth is off: anyone who reaches %s may push, pull and delete", config.listen)
    os.environ.update(config.to_env())
    scanner = Sidecar("scan worker", [sys.executable, "-m", "cargohold", "scan-worker", "--supervised"])
    if config.scan_on_push:
        scanner.start()
    try:
        server.serve()
    finally:
        scanner.stop()


class Sidecar:
    """The `cargohold.sidecar` supervisor of a process that runs beside the server."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        supervisor = [sys.executable, "-m", "cargohold.sidecar", "--parent", str(os.getpid()), "--name", self.name]
        self._process = subprocess.Popen([*supervisor, "--", *self.command], env=os.environ.copy())

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # it stops its child first
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _prepare_auth(config: Config) -> None:
    """Signing keys and a first administrator exist before any worker starts."""
    from .auth.service import Authority

    authority = Authority.open(config)
    try:
        created = authority.ensure_initial_admin(config.data)
        if created is not None:
            log.warning("created the administrator 'admin'; its password is in %s (readable by you only)", created)
    finally:
        authority.close()
