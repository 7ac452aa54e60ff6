"""A real S3 of the tests' own: a single-node Ceph (one monitor, one manager, one memstore OSD)
and radosgw, every daemon on loopback ports picked at run time, its config, data, sockets, logs
and pid files under one directory of its own (never /etc/ceph or /var/lib/ceph). Cephx is off
(`auth none`); radosgw checks S3 signatures against one user made with known keys.

The same interface as `MotoServer` (tests/support/s3.py): `endpoint`, `port`, `environment()`,
`create_bucket()`, `stop()`. `CARGOHOLD_TEST_S3=radosgw` makes the session fixture `s3` start
this instead of moto (`make test-ceph`). By hand, for a look at it:

    python -m tests.support.ceph start DIR    # prints the endpoint and the keys, leaves it running
    python -m tests.support.ceph stop DIR

The packages: scripts/ceph-deps.sh (as root). Config gotchas, found when it was first brought
up on these machines (/work/shared/reference/components.md, row 7a): messenger v2 only
(`ms_bind_msgr1 = false`, the monitor at `v2:127.0.0.1:PORT`), the daemons' ports confined to a
range of our own, and `ms_mon_client_mode = crc`, because radosgw's default `secure` mode fails
to authenticate with auth none ("get_initial_auth_request returned -13")."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.support.s3 import CREDENTIALS, S3Server
from tests.support.waiting import wait_until

TOOLS = ("monmaptool", "ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "radosgw", "radosgw-admin")
# The daemons stop in this order (radosgw first, the monitor last).
DAEMONS = ("client.rgw.a", "osd.0", "mgr.x", "mon.a")
# Ports the monitor, manager and OSD bind; the OSD takes four (public, cluster, two heartbeats).
PORT_RANGE = 12
S3_USER = "cargohold-test"


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"Ceph is not installed (missing {', '.join(missing)}): run scripts/ceph-deps.sh as root, "
            "or `make test-ceph`, which does"
        )


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_range(count: int) -> int:
    """The first of `count` consecutive free loopback ports, from a random start well above the
    ports the other tests' servers take (the kernel gives those from 32768 up)."""
    for _ in range(200):
        first = 20000 + int.from_bytes(os.urandom(2), "big") % 10000
        if all(_free(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1 for Ceph")


class RadosGateway(S3Server):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.conf = workdir / "ceph.conf"
        self.run_dir = workdir / "run"
        self.log_dir = workdir / "log"
        self.port = 0
        self.fsid = str(uuid.uuid4())
        self.timings: dict[str, float] = {}

    # -- bring-up ------------------------------------------------------------------------

    def _config(self, mon_port: int, first_port: int) -> str:
        d = self.workdir
        return f"""[global]
fsid = {self.fsid}
mon_host = v2:127.0.0.1:{mon_port}
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_ipv6 = false
ms_bind_port_min = {first_port}
ms_bind_port_max = {first_port + PORT_RANGE - 1}
ms_mon_client_mode = crc
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = {self.run_dir}
admin_socket = {self.run_dir}/$name.asok
pid_file = {self.run_dir}/$name.pid
log_file = {self.log_dir}/$name.log
mon_cluster_log_file = {self.log_dir}/cluster.log
keyring = {d}/keyring
mon_data = {d}/mon/$id
mgr_data = {d}/mgr/$id
osd_data = {d}/osd/$id
osd_objectstore = memstore
memstore_device_bytes = {2 << 30}
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
mgr_initial_modules =
crash_dir = {d}/crash

[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:{self.port} tcp_nodelay=1
rgw_data = {d}/rgw
"""

    def _run(self, *command: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [command[0], "-c", str(self.conf), *command[1:]], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def _mark(self, step: str, since: float) -> float:
        now = time.monotonic()
        self.timings[step] = now - since
        return now

    def start(self) -> RadosGateway:
        _require_tools()
        began = step = time.monotonic()
        for path in (self.run_dir, self.log_dir, self.workdir / "mon" / "a", self.workdir / "mgr" / "x"):
            path.mkdir(parents=True, exist_ok=True)
        (self.workdir / "osd" / "0").mkdir(parents=True, exist_ok=True)
        (self.workdir / "rgw").mkdir(exist_ok=True)
        (self.workdir / "crash").mkdir(exist_ok=True)
        first = _free_range(PORT_RANGE + 2)
        mon_port, self.port = first + PORT_RANGE, first + PORT_RANGE + 1
        self.conf.write_text(self._config(mon_port, first))
        try:
            monmap = str(self.workdir / "monmap")
            subprocess.run(
                ["monmaptool", "--create", "--fsid", self.fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", monmap],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
            self._run("ceph-mon", "-i", "a")
            step = self._mark("mon", step)
            self._run("ceph-mgr", "-i", "x")
            osd_uuid = str(uuid.uuid4())
            osd_id = self._run("ceph", "osd", "create", osd_uuid).strip()
            if osd_id != "0":
                raise RuntimeError(f"the first OSD got id {osd_id!r}")
            self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
            self._run("ceph-osd", "-i", "0")
            wait_until(self._osd_up, "the OSD to be up and in", timeout=60, poll=0.5)
            step = self._mark("mgr+osd", step)
            self._run("radosgw", "-n", "client.rgw.a")
            wait_until(self._answers, f"radosgw to answer on {self.endpoint}", timeout=90, poll=0.25)
            step = self._mark("radosgw", step)
            self._run(
                "radosgw-admin",
                "user",
                "create",
                "--uid",
                S3_USER,
                "--display-name",
                "cargohold tests",
                "--access-key",
                CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "--secret",
                CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
            self._mark("user", step)
            self.timings["total"] = time.monotonic() - began
        except BaseException as err:
            logs = self.log_tails()
            self.stop()
            if isinstance(err, Exception):
                raise RuntimeError(f"Ceph/radosgw did not come up under {self.workdir}: {err}\n{logs}") from err
            raise
        # This process's own clients (the tests') sign with the user's keys.
        os.environ.update(CREDENTIALS)
        return self

    def _osd_up(self) -> bool:
        self._check_running()
        return '"num_up_osds":1' in self._run("ceph", "osd", "stat", "--format", "json").replace(" ", "")

    def _answers(self) -> bool:
        self._check_running()
        try:
            return httpx.get(self.endpoint, timeout=2).status_code in (200, 403)
        except httpx.HTTPError:
            return False

    def _check_running(self) -> None:
        for name in DAEMONS:
            pid = self._pid(name)
            if pid is not None and not _alive(pid):
                raise RuntimeError(f"{name} exited")

    def _pid(self, name: str) -> int | None:
        path = self.run_dir / f"{name}.pid"
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for log in sorted(self.log_dir.glob("*.log")) if self.log_dir.exists() else []:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM each daemon by its pid file, radosgw first; SIGKILL what outlives 30 s."""
        for name in DAEMONS:
            pid = self._pid(name)
            if pid is None or not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.port = 0


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie of ours does not count: the daemons fork away from us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.support.ceph start|stop DIR", file=sys.stderr)
        return 2
    gateway = RadosGateway(Path(argv[1]).resolve())
    if argv[0] == "stop":
        gateway.stop()
        return 0
    gateway.start()
    print(f"radosgw: {gateway.endpoint} (took {gateway.timings['total']:.1f} s)")
    for key, value in gateway.environment().items():
        print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
