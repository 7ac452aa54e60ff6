"""A process `serve` keeps beside its HTTP workers (the scan worker, whose CPU must not be the
request path's), supervised by a small process of its own:

    python -m cargohold.sidecar --parent PID --name "scan worker" -- COMMAND...

It runs COMMAND, starts it again when it dies, and stops it (SIGTERM, then SIGKILL) when told to
stop or when PID (the server) is gone, so a killed server leaves no orphan. It is a process and
not a thread of `serve` because granian's serve loop holds the GIL: a supervising thread there
would not run until the server stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading

RESTART_DELAY = 2.0
POLL = 0.5
log = logging.getLogger("cargohold.server")


def supervise(command: list[str], name: str, parent: int) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    child: subprocess.Popen[bytes] | None = None
    try:
        while not stopping.is_set() and os.getppid() == parent:
            if child is None or child.poll() is not None:
                if child is not None:
                    log.warning("the %s exited (status %s); starting it again", name, child.returncode)
                    if stopping.wait(RESTART_DELAY):
                        break
                child = subprocess.Popen(command)
            stopping.wait(POLL)
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cargohold.sidecar")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--name", default="sidecar")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to keep running after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(supervise(command, args.name, args.parent))


if __name__ == "__main__":
    main()
