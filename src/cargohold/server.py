"""Running the registry under an ASGI server."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from .config import Config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def serve(config: Config) -> None:
    """Serve until interrupted; worker processes rebuild the config from the environment."""
    config.data.mkdir(parents=True, exist_ok=True)
    os.environ.update(config.to_env())
    configure_logging(config.log_level)
    uvicorn.run(
        "cargohold.registry.app:create_app",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=config.log_level,
        log_config=None,
        server_header=False,
        timeout_keep_alive=30,
    )
