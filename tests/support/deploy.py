"""The deployment artifacts' test helpers: a local Python base image (no public image can be
pulled here), the cargohold image built from deploy/Dockerfile on it, and nginx in front.

The base is a Debian bookworm minbase with python3 and python3-venv made by debootstrap from the
apt mirror (about 50 s) and kept as a tarball under `.cache/deploy/` in the clone (git-ignored),
so a second run only imports it (a few seconds)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.clients import Dockerd, run
from tests.support.servers import require_tool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CACHE = REPO / ".cache" / "deploy"

SUITE = "bookworm"
MIRROR = os.environ.get("CARGOHOLD_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv")
# What a base image need not carry: the package cache and lists, documentation, translations.
PRUNED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")
BASE_TAG = "cargohold-test-base:bookworm-python3"
# A normal base image's environment (`docker import` gives an image none).
BASE_CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Held while a cache entry is made, so parallel runs of the suite make it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_rootfs() -> Path:
    """The tarball of the base root filesystem: from the cache, or made now with debootstrap."""
    key = hashlib.sha256(repr((SUITE, "minbase", PACKAGES, PRUNED)).encode()).hexdigest()[:12]
    tarball = CACHE / f"debian-{SUITE}-python3-{key}.tar"
    with locked(CACHE / "base.lock"):
        if tarball.exists():
            return tarball
        debootstrap = require_tool("debootstrap")
        if os.geteuid() != 0:
            raise AssertionError("debootstrap needs root to make the base image's root filesystem")
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        try:
            root = work / "root"
            run(
                [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, root, MIRROR],
                timeout=600,
            )
            for pruned in PRUNED:
                shutil.rmtree(root / pruned, ignore_errors=True)
            (root / "var/lib/apt/lists/partial").mkdir(parents=True)
            partial = work / "rootfs.tar"
            run(["tar", "--numeric-owner", "-C", root, "-cf", partial, "."], timeout=300)
            partial.rename(tarball)
        finally:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    return tarball


def import_base(dockerd: Dockerd) -> str:
    """The base image in this engine (imported once per engine); returns its tag."""
    if dockerd.run("image", "inspect", BASE_TAG, check=False).returncode != 0:
        changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
        dockerd.run("import", *changes, base_rootfs(), BASE_TAG, timeout=300)
    return BASE_TAG


def build_image(dockerd: Dockerd, base: str, tag: str) -> subprocess.CompletedProcess[str]:
    """deploy/build-image.sh: the wheels made here, then `docker build` with no network at all,
    which proves the image needs none beyond the wheels."""
    env = {**dockerd.env, "PYTHON": sys.executable, "BASE": base, "IMAGE": tag}
    return run([DEPLOY / "build-image.sh", "--network", "none"], env=env, cwd=REPO, timeout=600, log=dockerd.log)


class Nginx:
    """nginx with deploy/nginx.conf, its upstream pointed at one address on loopback; everything
    else (the proxy settings under test) as the stack runs it."""

    def __init__(self, workdir: Path, listen_port: int, upstream: str) -> None:
        self.workdir = workdir
        self.port = listen_port
        self.url = f"http://127.0.0.1:{listen_port}"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        text = (DEPLOY / "nginx.conf").read_text()
        # Exact lines of deploy/nginx.conf replaced for a run here; each must be found.
        replacements = {
            "pid /tmp/nginx.pid;": f"pid {workdir / 'nginx.pid'};",
            "error_log /dev/stderr warn;": f"error_log {workdir / 'error.log'} warn;",
            "access_log /dev/stdout;": f"access_log {workdir / 'access.log'};",
            "client_body_temp_path /tmp/nginx-body;": f"client_body_temp_path {workdir / 'body'};",
            "proxy_temp_path /tmp/nginx-proxy;": f"proxy_temp_path {workdir / 'proxy'};",
            "server cargohold:5000 max_fails=0;": f"server {upstream} max_fails=0;",
            "listen 5000;": f"listen 127.0.0.1:{listen_port};",
        }
        for old, new in replacements.items():
            assert text.count(old) == 1, f"deploy/nginx.conf no longer has the line {old!r} this test adapts"
            text = text.replace(old, new)
        self.config = workdir / "nginx.conf"
        # As root, nginx's workers would run as `nobody`, who may not enter pytest's directories.
        self.config.write_text("daemon off;\nuser root;\n" + text)

    def start(self) -> Nginx:
        nginx = require_tool("nginx")
        run([nginx, "-t", "-q", "-c", self.config, "-p", self.workdir])
        with open(self.workdir / "stderr.log", "ab") as log:
            self.process = subprocess.Popen(
                [nginx, "-c", str(self.config), "-p", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
