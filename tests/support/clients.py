"""Real registry clients for the interop tests: dockerd, skopeo/podman, umoci-built OCI layouts, and HTTP checks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
import psutil
import pytest

from tests.support.servers import ServerProcess, require_tool

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ALL_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
    check: bool = True,
    log: Path | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a client; on failure the assertion message carries its output (and a daemon log tail if given)."""
    __tracebackhide__ = True  # the message says it all; the test's own line is what matters
    argv = [str(c) for c in cmd]
    result = subprocess.run(
        argv,
        env=dict(env) if env else None,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        tail = f"\n--- {log} (tail) ---\n{log.read_text(errors='replace')[-3000:]}" if log and log.exists() else ""
        raise AssertionError(
            f"command failed with exit {result.returncode}: {' '.join(argv)}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}{tail}"
        )
    return result


def kill_processes_mentioning(marker: str) -> list[int]:
    """SIGKILL every process whose command line names `marker` (a directory only our daemons use)."""
    killed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and proc.pid != os.getpid():
            try:
                proc.send_signal(signal.SIGKILL)
                killed.append(proc.pid)
            except psutil.Error:
                pass
    return killed


def unmount_under(root: Path) -> None:
    """Lazily unmount anything a daemon left mounted below `root`, deepest first, so the tree can be removed."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# --- registry-side checks over plain HTTP ------------------------------------------------------------------------


def fetch_manifest(registry: ServerProcess, repo: str, reference: str) -> httpx.Response:
    """GET a manifest the way a client would, accepting every manifest type; asserts 200 and a truthful digest."""
    response = httpx.get(f"{registry.url}/v2/{repo}/manifests/{reference}", headers={"accept": ALL_MANIFESTS})
    assert response.status_code == 200, f"GET {repo}:{reference} gave {response.status_code}: {response.text}"
    header = response.headers.get("docker-content-digest")
    assert header == sha256(response.content), f"Docker-Content-Digest {header} is not the body's digest"
    return response


def registry_digest(registry: ServerProcess, repo: str, reference: str) -> str:
    return sha256(fetch_manifest(registry, repo, reference).content)


def repository(registry: ServerProcess, repo: str) -> str:
    return f"{registry.host}/{repo}"


# --- dockerd -------------------------------------------------------------------------------------------------------


DOCKERD_LOCK = Path("/tmp/cargohold-dockerd.lock")

# dockerd 20.10 and containerd 1.6 hard-code these (plugin specs, shim sockets); no flag moves them
HARDCODED_RUN_DIRS = (
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)


class Dockerd:
    """A private Docker engine (dockerd 20.10) under a short /tmp dir, driven by whichever `docker` CLI is first."""

    def __init__(self) -> None:
        # unix socket paths are limited to 108 bytes, so pytest's deep tmp paths will not do
        self.root = Path(tempfile.mkdtemp(prefix="chd-", dir="/tmp"))
        self.socket = self.root / "d.sock"
        self.log = self.root / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._machine_lock: IO[str] | None = None
        self.preexisting = {path for path in HARDCODED_RUN_DIRS if path.exists()}
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.root / "cli"),
            # buildx is not installed; ask for the legacy builder rather than relying on the CLI's fallback
            "DOCKER_BUILDKIT": "0",
        }

    def start(self) -> Dockerd:
        # Two engines on one machine collide in the hard-coded run dirs; a second test run waits its turn
        self._machine_lock = open(DOCKERD_LOCK, "w")  # noqa: SIM115 - held until stop()
        fcntl.flock(self._machine_lock, fcntl.LOCK_EX)
        dockerd = require_tool("dockerd")
        self.docker = require_tool("docker")
        # dockerd starts these itself and only says so deep in its log when they are missing
        require_tool("containerd")
        require_tool("runc")
        # without a config file of its own dockerd reads /etc/docker/daemon.json and writes /etc/docker/key.json
        config = self.root / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        cmd = [
            dockerd,
            "--config-file", str(config),
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "-H", f"unix://{self.socket}",
            "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--storage-driver", "overlay2",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://docker") as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/_ping", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"dockerd did not answer on {self.socket} within {timeout}s:\n{self.log_tail()}")

    def run(
        self, *args: str | os.PathLike[str], check: bool = True, timeout: float = 180, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        return run([self.docker, *args], env=self.env, check=check, timeout=timeout, log=self.log, stdin=stdin)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        # containerd and its shims are daemonized away from dockerd but name our exec root on their command line
        kill_processes_mentioning(str(self.root))
        unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        for path in HARDCODED_RUN_DIRS:  # children first; only dirs we caused and that are empty now
            if path not in self.preexisting:
                with contextlib.suppress(OSError):
                    path.rmdir()
        if self._machine_lock is not None:
            self._machine_lock.close()
            self._machine_lock = None


# --- skopeo and podman ---------------------------------------------------------------------------------------------


class ContainersTools:
    """skopeo and podman with every config and store in a private dir.

    One thing cannot be moved for root: containers/image's blob-info cache in /var/lib/containers/cache.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = root / "storage"
        self.runroot = Path(tempfile.mkdtemp(prefix="chp-", dir="/tmp"))  # runtime sockets want a short path
        home = root / "home"
        (home / ".config" / "containers").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        # the containers/image libraries read the user's policy before /etc/containers/policy.json
        (home / ".config" / "containers" / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        registries = root / "registries.conf"
        registries.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        storage_conf = root / "storage.conf"
        # vfs needs no mounts, so nothing can be left mounted after the session; the images here are tiny
        storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.storage}"\nrunroot = "{self.runroot}"\n'
        )
        runc = root / "bin" / "runc"
        runc.parent.mkdir(exist_ok=True)
        # runc keeps state in /run/runc unless given --root, and podman 4.3 drops --runtime-flag in the
        # `container cleanup` it runs when a container exits, so a wrapper passes it on every call
        runc.write_text(f'#!/bin/sh\nexec {require_tool("runc")} --root {self.runroot / "runc"} "$@"\n')
        runc.chmod(0o755)
        containers_conf = root / "containers.conf"
        # no CAP_SYS_RESOURCE here: podman's default rlimits cannot be set, and crun cannot drive hybrid cgroups
        containers_conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{root / "events.log"}"\n'
            f'tmp_dir = "{self.runroot / "libpod"}"\n'
            f'volume_path = "{self.storage / "volumes"}"\n'
            f'[engine.runtimes]\nrunc = ["{runc}"]\n'
        )
        # podman refuses to push when REGISTRY_AUTH_FILE names a file that does not exist
        (root / "auth.json").write_text('{"auths": {}}')
        self.env = {
            **os.environ,
            "HOME": str(home),
            "TMPDIR": str(root / "tmp"),
            "CONTAINERS_CONF": str(containers_conf),
            "CONTAINERS_REGISTRIES_CONF": str(registries),
            "CONTAINERS_STORAGE_CONF": str(storage_conf),
            "REGISTRY_AUTH_FILE": str(root / "auth.json"),
        }

    def skopeo(self, *args: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        return run([require_tool("skopeo"), *args], env=self.env, check=check)

    def podman(
        self, *args: str | os.PathLike[str], check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        base = [
            require_tool("podman"),
            "--root", self.storage, "--runroot", self.runroot, "--storage-driver", "vfs",
        ]  # fmt: skip
        return run([*base, *args], env=self.env, check=check, stdin=stdin)

    def stop(self) -> None:
        # conmon or a container left behind would name our run root
        kill_processes_mentioning(str(self.runroot))
        unmount_under(self.runroot)
        unmount_under(self.storage)
        shutil.rmtree(self.runroot, ignore_errors=True)


# --- OCI image layouts built with umoci ----------------------------------------------------------------------------


def static_busybox() -> Path:
    """The busybox-static binary that FROM-scratch images copy in to get a shell."""
    path = Path("/bin/busybox")
    if not path.exists():
        pytest.fail("/bin/busybox is missing: install busybox-static (scripts/system-deps.sh)", pytrace=False)
    return path


def hello_context(context: Path, hello: bytes, recipe: str = "Containerfile") -> Path:
    """A FROM-scratch build context, with its recipe, whose image prints `hello`."""
    context.mkdir()
    shutil.copy(static_busybox(), context / "busybox")
    (context / "hello.txt").write_bytes(hello)
    (context / recipe).write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY hello.txt /hello.txt\n"
        'CMD ["/bin/busybox", "cat", "/hello.txt"]\n'
    )
    return context


def umoci(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    __tracebackhide__ = True
    return run([require_tool("umoci"), *args])


def layout_index(layout: Path) -> dict[str, object]:
    return json.loads((layout / "index.json").read_text())


def layout_descriptor(layout: Path, tag: str) -> dict[str, object]:
    for entry in layout_index(layout)["manifests"]:  # type: ignore[union-attr]
        if entry.get("annotations", {}).get(REF_NAME) == tag:
            return entry
    raise AssertionError(f"{layout} has no tag {tag}: {layout_index(layout)}")


def layout_digest(layout: Path, tag: str) -> str:
    return str(layout_descriptor(layout, tag)["digest"])


def layout_blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":", 1)
    return (layout / "blobs" / algorithm / hex_digest).read_bytes()


def write_layout_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.write_bytes(data)
    return digest


def build_umoci_image(
    layout: Path, tag: str, layers: Sequence[Mapping[str, bytes]], *, architecture: str = "amd64"
) -> str:
    """An image with one layer per mapping (each a /layerN dir of files); returns its manifest digest."""
    if not (layout / "index.json").exists():
        umoci("init", "--layout", layout)
    umoci("new", "--image", f"{layout}:{tag}")
    staging = Path(tempfile.mkdtemp(prefix="layers-", dir=layout.parent))
    for number, files in enumerate(layers):
        source = staging / f"layer{number}"
        source.mkdir()
        for name, content in files.items():
            (source / name).write_bytes(content)
        umoci("insert", "--image", f"{layout}:{tag}", source, f"/layer{number}")
    shutil.rmtree(staging)
    umoci("config", "--image", f"{layout}:{tag}", "--architecture", architecture, "--os", "linux",
          "--config.cmd", "/bin/sh", "--config.env", f"IMAGE_TAG={tag}")  # fmt: skip
    return layout_digest(layout, tag)


def add_platform_variant(layout: Path, tag: str, new_tag: str, architecture: str) -> str:
    """Same layers under another architecture (a new config, so a new manifest); returns its digest."""
    umoci("config", "--image", f"{layout}:{tag}", "--tag", new_tag, "--architecture", architecture)
    return layout_digest(layout, new_tag)


def build_index(layout: Path, tag: str, child_tags: Sequence[str]) -> str:
    """Write an OCI index over `child_tags` into the layout by hand (umoci cannot make one); returns its digest."""
    manifests = []
    for child in child_tags:
        descriptor = layout_descriptor(layout, child)
        manifest = json.loads(layout_blob(layout, str(descriptor["digest"])))
        config = json.loads(layout_blob(layout, manifest["config"]["digest"]))
        manifests.append({
            "mediaType": OCI_MANIFEST,
            "digest": descriptor["digest"],
            "size": descriptor["size"],
            "platform": {"architecture": config["architecture"], "os": config["os"]},
        })  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2).encode()
    digest = write_layout_blob(layout, index)
    top = layout_index(layout)
    top["manifests"].append(  # type: ignore[union-attr]
        {"mediaType": OCI_INDEX, "digest": digest, "size": len(index), "annotations": {REF_NAME: tag}}
    )
    (layout / "index.json").write_text(json.dumps(top))
    return digest
