"""Running the registry under granian, the ASGI server chosen by measurement (docs/architecture.md)."""

from __future__ import annotations

import logging
import os
import sys

from granian.constants import Interfaces, Loops
from granian.http import HTTP1Settings
from granian.server import Server

from .config import Config

# Largest body chunk granian hands the app. Bigger chunks mean fewer trips into Python per
# megabyte (upload speed); each open connection may hold one (memory under many uploads).
# 1 MiB measured the best balance: see docs/architecture.md.
HTTP1_BUFFER_BYTES = 1 << 20
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def serve(config: Config) -> None:
    """Serve until interrupted; worker processes rebuild the config from the environment."""
    config.data.mkdir(parents=True, exist_ok=True)
    os.environ.update(config.to_env())
    configure_logging(config.log_level)
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
    ).serve()
