"""A PostgreSQL server of the tests' own: initdb and pg_ctl on a free loopback port, its socket
and data under the test's directory, never the system cluster. As root (CI), the server runs as
the `postgres` user, which initdb requires."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.support.servers import free_port


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")) or (
        [shutil.which(tool)] if shutil.which(tool) else []
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {tool} is not installed (apt-get install postgresql; make system-deps)")
    return str(found[-1])


class PostgresServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "pgdata"
        self.socket_dir = workdir / "socket"
        self.log = workdir / "postgres.log"
        self.port = 0
        self._as_postgres = os.getuid() == 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        if self._as_postgres:
            command = ("runuser", "-u", "postgres", "--", *command)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}\n{log}")
        return done

    def start(self, port: int | None = None) -> PostgresServer:
        """Start on a free port, or on `port` (a restart that clients must find where it was)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (self.workdir, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        if not self.data.exists():
            self._run(
                _pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        # A port chosen here may be taken before the server binds it: pg_ctl then fails, so retry.
        for _ in range(5):
            self.port = port or free_port()
            options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            try:
                self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
                return self
            except RuntimeError:
                continue
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.port:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.port = 0

    def create_database(self) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        name = f"t{uuid.uuid4().hex[:12]}"
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
