"""Running the registry under granian, the ASGI server chosen by measurement (docs/architecture.md)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from granian.constants import Interfaces, Loops, SSLProtocols
from granian.http import HTTP1Settings
from granian.server import Server

from .config import Config

# Largest body chunk granian hands the app. Bigger chunks mean fewer trips into Python per
# megabyte (upload speed); each open connection may hold one (memory under many uploads).
# 1 MiB measured the best balance: see docs/architecture.md.
HTTP1_BUFFER_BYTES = 1 << 20
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
log = logging.getLogger("cargohold.server")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def serve(config: Config) -> None:
    """Serve until interrupted; worker processes rebuild the config from the environment."""
    config.data.mkdir(parents=True, exist_ok=True)
    configure_logging(config.log_level)
    if config.tls_dev:
        from .devtls import default_hosts, ensure_dev_certificates, trust_instructions

        certs = ensure_dev_certificates(config.data / "tls", default_hosts(config.host))
        config.tls_cert, config.tls_key, config.tls_dev = str(certs.cert), str(certs.key), False
        log.info("%s", trust_instructions(certs.ca, config.listen))
    if config.auth:
        _prepare_auth(config)
    else:
        log.warning("auth is off: anyone who reaches %s may push, pull and delete", config.listen)
    os.environ.update(config.to_env())
    tls = {"ssl_cert": Path(config.tls_cert), "ssl_key": Path(config.tls_key)} if config.tls_cert else {}
    Server(
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
        log_level=config.log_level,
        log_dictconfig={"version": 1, "disable_existing_loggers": False},
        ssl_protocol_min=SSLProtocols.tls12,
        **tls,  # type: ignore[arg-type]
    ).serve()


def _prepare_auth(config: Config) -> None:
    """Signing keys and a first administrator exist before any worker starts."""
    from .auth.service import Authority
    from .registry.app import auth_settings

    authority = Authority.open(config.data, auth_settings(config))
    try:
        created = authority.ensure_initial_admin(config.data)
        if created is not None:
            log.warning("created the administrator 'admin'; its password is in %s (readable by you only)", created)
    finally:
        authority.close()
