"""Real servers the tests start on loopback ports: cargohold, Debian's docker-registry, dockerd."""

from __future__ import annotations

import abc
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

_SERVING = re.compile(r"registry on https?://127\.0\.0\.1:(\d+)/v2/")


def serve_in_background(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    """A test's own small HTTP server, answering from a daemon thread until `shut_down`."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def shut_down(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_tool(name: str) -> str:
    """The path of a tool the test needs; a clear failure (never a skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        where = "`make system-deps` as root (Debian packages) or `make .venv/.installed` (Python tools)"
        pytest.fail(f"{name} is not installed: run {where}", pytrace=False)
    return path


def wait_for_http(url: str, process: subprocess.Popen | None, log: Path | None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}:\n{tail}")
        try:
            httpx.get(url, timeout=1, verify=False)  # any answer will do, even over a self-made certificate
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class ServerProcess(abc.ABC):
    """A child process serving a registry at `url`; `host` is what image references use."""

    kind = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log = workdir / "server.log"
        self.process: subprocess.Popen | None = None

    @abc.abstractmethod
    def command(self) -> list[str]: ...

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> ServerProcess:
        logged = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() takes its workers too
            )
        self.learn_port(logged)
        wait_for_http(self.url + "/v2/", self.process, self.log)
        return self

    def learn_port(self, logged: int) -> None:  # noqa: B027 (most servers get their port from the test)
        """Servers that bind a port of the system's choosing find it out here, from their log
        past `logged` bytes."""

    def kill(self) -> None:
        """SIGKILL to the server and its worker processes, as a crash (or the OOM killer) would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process:
            # Nothing of the group may outlive the test, or it would hold the port.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


class Cargohold(ServerProcess):
    """Our registry. Open (auth off) unless `auth`; `tls` serves HTTPS with the development CA."""

    kind = "cargohold"

    def __init__(
        self,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
        *,
        auth: bool = False,
        tls: bool = False,
    ) -> None:
        super().__init__(workdir)
        # Port 0 unless told: the server binds one of the system's choosing and says which, so
        # no other process can take it between a test picking it and the server binding it.
        self.port = port or 0
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{self.host}"
        self.data = workdir / "data"
        self.ca = self.data / "tls" / "ca.crt"
        self.extra_env = {"CARGOHOLD_AUTH": "on" if auth else "off"}
        if tls:
            self.extra_env["CARGOHOLD_TLS_DEV"] = "true"
        self.extra_env.update(extra_env or {})

    def learn_port(self, logged: int, timeout: float = 20) -> None:
        if self.port:  # known: given, or learnt at the first start (a restart keeps it)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _SERVING.search(self.log.read_bytes()[logged:].decode(errors="replace"))
            if found:
                self.port = int(found[1])
                self.host = f"127.0.0.1:{self.port}"
                self.url = f"{self.scheme}://{self.host}"
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"cargohold exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.01)
        raise RuntimeError(f"cargohold did not say which port it serves within {timeout}s")

    def admin_password(self) -> str:
        return (self.data / "initial-admin-password").read_text().strip()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cargohold", "serve", "--listen", self.host, "--data", str(self.data)]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
        env.update(self.extra_env)
        return env


class Distribution(ServerProcess):
    """Debian's docker-registry (Distribution 2.8), the reference the tests compare against."""

    kind = "distribution"

    def command(self) -> list[str]:
        binary = require_tool("docker-registry")
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"http: {{addr: '{self.host}'}}\n"
            "storage:\n"
            f"  filesystem: {{rootdirectory: '{self.workdir / 'data'}'}}\n"
            "  delete: {enabled: true}\n"
        )
        return [binary, "serve", str(config)]
