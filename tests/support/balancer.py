"""nginx (Debian's) in front of registry replicas on loopback, as a fleet runs behind a balancer:
round robin, bodies streamed both ways (no buffering of layers), no size limit."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.support.servers import free_port
from tests.support.waiting import wait_until

CONFIG = """\
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream registry {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        chunked_transfer_encoding on;
        location / {{
            proxy_pass http://registry;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 900s;
            proxy_send_timeout 900s;
            # A replica that refuses connections (killed) is skipped; a request already sent to
            # one that died is not resent (PATCH and PUT are not idempotent): the client retries.
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light; make system-deps)")
    return found


class Nginx:
    def __init__(self, workdir: Path, upstream_ports: list[int]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.upstream_ports = upstream_ports
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        self.workdir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in self.upstream_ports
        )
        config = self.workdir / "nginx.conf"
        config.write_text(CONFIG.format(dir=self.workdir, servers=servers, port=self.port))
        log = open(self.workdir / "nginx.out", "wb")  # noqa: SIM115 - nginx writes it while it runs
        self.process = subprocess.Popen(
            [_nginx(), "-c", str(config), "-p", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(self._listening, "nginx to listen", timeout=20)
        return self

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            errors = (
                (self.workdir / "error.log").read_text(errors="replace")
                if (self.workdir / "error.log").exists()
                else ""
            )
            raise RuntimeError(f"nginx exited:\n{(self.workdir / 'nginx.out').read_text()}\n{errors}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
