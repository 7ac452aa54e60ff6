"""The supply-chain tests' images: real OCI layouts made with umoci from real package managers'
work, each with the truth those managers report (tests/support/oracles.py).

- `debian_image()`: the debootstrap bookworm base of tests/support/deploy.py, then a layer where
  dpkg purges python3-lib2to3 (its files become whiteouts, its status entry goes), wheels pip
  installs from PyPI, npm packages npm installs from its registry (a scoped one, a nested
  node_modules), a Go binary built here, and last a layer of lint findings (a setuid file, a
  world-writable directory, a private key, a secret in ENV, no HEALTHCHECK, root). With
  `clean=True` the same lower layers under a layer that clears the findings instead (no setuid
  bits, USER 1000, a HEALTHCHECK, no secret).
- `alpine_image()`: an Alpine 3.19 os-release and an apk `installed` database in two layers.
- `rpm_image()`: an AlmaLinux 9 os-release and a sqlite rpmdb rpm writes as it installs two rpms
  rpmbuild makes here, in two layers.

Each is built once per clone under `.cache/supply/` (git-ignored), keyed by its inputs and this
code, behind a file lock; the merged root filesystem of the top layer is kept beside the layout,
and the truth is stored as JSON, so a cached call costs a JSON read.

A component's `layer` is the layer that brought it in (the lowest since which the managers report
it at that version): every Debian package's is the base's, though the purge above rewrote
dpkg's status file, which `record_layer` tells."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support import oracles
from tests.support.cli import CargoholdCLI
from tests.support.clients import REF_NAME, layout_blob, layout_digest, run, umoci, write_layout_blob
from tests.support.deploy import base_rootfs, locked
from tests.support.oracles import Component
from tests.support.servers import ServerProcess, require_tool

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "supply"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# --- what goes into the images -------------------------------------------------------------------------------------

REMOVED_DEB = "python3-lib2to3"  # nothing in minbase needs it at run time; it has a Source field and many files
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"  # where Debian's python3 looks for local installs
# Pinned with --no-deps so the set never drifts; old releases with published advisories.
WHEELS = ("urllib3==1.26.4", "idna==2.10", "requests==2.25.1", "chardet==4.0.0", "certifi==2020.12.5", "six==1.16.0")
NPM_PROJECT = "app"
# optimist@0.6.1 wants minimist ~0.0.1, so npm nests minimist@0.0.10 under it beside the top-level 1.2.5.
NPM_PACKAGES = ("lodash@4.17.20", "minimist@1.2.5", "optimist@0.6.1", "@isaacs/string-locale-compare@1.1.0")
GO_BINARY = "usr/local/bin/fixture-app"
GO_MAIN = "example.com/fixture-app"
GO_REPLACED = ("example.com/greeting", "v1.2.3")  # a local directory, through `replace`
GO_FROM_PROXY = ("example.com/quote", "v1.5.2")  # a module zip in a file:// GOPROXY made here: a dep with h1: sum
SECRET_ENV = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example key
SETUID_FILE = "usr/local/bin/fixture-suid"
WORLD_WRITABLE_DIR = "srv/shared"
PRIVATE_KEY_FILE = "app/config/server.key"
HEALTHCHECK = ["CMD", "/usr/local/bin/fixture-app"]


# --- what a test gets -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintTruth:
    """The findings the top image holds, read from its merged root and its config."""

    setuid: tuple[str, ...]  # regular files with the setuid or setgid bit
    world_writable: tuple[str, ...]  # files and directories writable by all, without the sticky bit
    private_keys: tuple[str, ...]  # files that are PEM private keys
    secret_env: tuple[str, ...]  # names of ENV entries that carry secrets
    user: str  # the config's User ("" is root)
    healthcheck: bool


@dataclass(frozen=True)
class BuiltImage:
    """One image in an OCI layout, with what the package managers say it holds."""

    name: str
    layout: Path
    tag: str
    rootfs: Path  # the merged root as the top layer leaves it
    digest: str  # the manifest's
    layers: tuple[str, ...]  # the manifest's layer digests, bottom first
    components: tuple[Component, ...]  # present in the top image, each with the layer that brought it in
    snapshots: tuple[tuple[Component, ...], ...]  # every ecosystem's answer after each layer
    removed: tuple[Component, ...]  # present in a lower layer, gone from the top image
    lint: LintTruth
    distro: dict[str, str]  # the image's os-release fields

    @property
    def reference(self) -> str:
        """The layout reference the cargohold CLI and skopeo take."""
        return f"oci:{self.layout}:{self.tag}"

    def of_type(self, purl_type: str) -> list[Component]:
        return [c for c in self.components if c.type == purl_type]

    def layer_digest(self, component: Component) -> str:
        """The digest of the layer that brought `component` in."""
        return self.layers[component.layer]


# --- building: a layout, a bundle, one repack per layer ---------------------------------------------------------


class ImageBuilder:
    """An image built a layer at a time: change the bundle's root, `umoci repack` a diff layer
    (with OCI whiteouts for what went), ask the package managers what the root holds now."""

    def __init__(self, layout: Path, tag: str, bundle: Path, snapshots: Sequence[Sequence[Component]] = ()) -> None:
        self.layout = layout
        self.tag = tag
        self.bundle = bundle
        self.snapshots: list[tuple[Component, ...]] = [tuple(s) for s in snapshots]
        self.hashes: list[dict[str, str]] = []

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    @classmethod
    def new(cls, layout: Path, tag: str, bundle: Path) -> ImageBuilder:
        umoci("init", "--layout", layout)
        umoci("new", "--image", f"{layout}:{tag}")
        umoci("unpack", "--image", f"{layout}:{tag}", bundle)
        return cls(layout, tag, bundle)

    def layer(self, created_by: str, change: Callable[[Path], None]) -> None:
        change(self.rootfs)
        run(
            [require_tool("umoci"), "repack", "--refresh-bundle", "--history.created_by", created_by,
             "--image", f"{self.layout}:{self.tag}", self.bundle],
            timeout=300,
        )  # fmt: skip
        found = oracles.snapshot(self.rootfs)
        self.snapshots.append(tuple(found))
        self.hashes.append(oracles.file_hashes(self.rootfs, found))

    def branch(self, tag: str, bundle: Path) -> ImageBuilder:
        """A second image on the layers made so far, in a bundle of its own."""
        umoci("tag", "--image", f"{self.layout}:{self.tag}", tag)
        umoci("unpack", "--image", f"{self.layout}:{tag}", bundle)
        branch = ImageBuilder(self.layout, tag, bundle, self.snapshots)
        branch.hashes = list(self.hashes)
        return branch

    def configure(self, *options: str, healthcheck: list[str] | None = None) -> None:
        umoci("config", "--image", f"{self.layout}:{self.tag}", *options)
        if healthcheck is not None:
            set_healthcheck(self.layout, self.tag, healthcheck)

    def truth(self, name: str, cache: Path) -> dict[str, object]:
        """The record kept in truth.json: everything of a BuiltImage that the tools said."""
        manifest = json.loads(layout_blob(self.layout, layout_digest(self.layout, self.tag)))
        config = json.loads(layout_blob(self.layout, manifest["config"]["digest"]))
        layers = [layer["digest"] for layer in manifest["layers"]]
        assert len(layers) == len(self.snapshots), f"{name}: {len(layers)} layers but {len(self.snapshots)} snapshots"
        components, removed = placed(self.snapshots, self.hashes)
        return {
            "name": name,
            "layout": self.layout.relative_to(cache).as_posix(),
            "tag": self.tag,
            "rootfs": self.rootfs.relative_to(cache).as_posix(),
            "digest": layout_digest(self.layout, self.tag),
            "layers": layers,
            "components": [dataclasses.asdict(c) for c in components],
            "snapshots": [[dataclasses.asdict(c) for c in s] for s in self.snapshots],
            "removed": [dataclasses.asdict(c) for c in removed],
            "lint": dataclasses.asdict(lint_truth(self.rootfs, config)),
            "distro": os_release(self.rootfs),
        }


def placed(
    snapshots: Sequence[Sequence[Component]], hashes: Sequence[dict[str, str]]
) -> tuple[list[Component], list[Component]]:
    """The top snapshot's components with the layer since which each is present and the last
    layer that rewrote its record; and those lower snapshots had that the top has not."""
    top = snapshots[-1]
    keys = [{(c.key, c.location) for c in snapshot} for snapshot in snapshots]
    components = []
    for component in top:
        since = len(snapshots) - 1
        while since > 0 and (component.key, component.location) in keys[since - 1]:
            since -= 1
        written = max(
            index
            for index, layer_hashes in enumerate(hashes)
            if layer_hashes.get(component.location) != (hashes[index - 1].get(component.location) if index else None)
        )
        components.append(dataclasses.replace(component, layer=since, record_layer=written))
    gone = {c.key: c for snapshot in snapshots[:-1] for c in snapshot if (c.key, c.location) not in keys[-1]}
    return components, list(gone.values())


def set_healthcheck(layout: Path, tag: str, test: list[str]) -> None:
    """Docker's Healthcheck in the image config (umoci has no option for it): a new config blob,
    a new manifest naming it, the index entry of `tag` pointing at that."""
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    entry = next(e for e in index["manifests"] if e.get("annotations", {}).get(REF_NAME) == tag)
    manifest = json.loads(layout_blob(layout, entry["digest"]))
    config = json.loads(layout_blob(layout, manifest["config"]["digest"]))
    seconds = 1_000_000_000  # Docker keeps the durations in nanoseconds
    config.setdefault("config", {})["Healthcheck"] = {
        "Test": test,
        "Interval": 30 * seconds,
        "Timeout": 5 * seconds,
        "Retries": 3,
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest["config"] = {
        **manifest["config"],
        "digest": write_layout_blob(layout, config_bytes),
        "size": len(config_bytes),
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    entry["digest"] = write_layout_blob(layout, manifest_bytes)
    entry["size"] = len(manifest_bytes)
    index_path.write_text(json.dumps(index, separators=(",", ":")))
    umoci("gc", "--layout", layout)


def lint_truth(root: Path, config: dict[str, object]) -> LintTruth:
    setuid, writable, keys = [], [], []
    for directory, dirs, files in os.walk(root):
        for entry in [*dirs, *files]:
            path = Path(directory) / entry
            info = path.lstat()
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                continue
            if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                setuid.append(relative)
            if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
                writable.append(relative)
            if stat.S_ISREG(info.st_mode) and 0 < info.st_size < 1_000_000:
                with open(path, "rb") as file:
                    head = file.read(64)
                if head.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in head:
                    keys.append(relative)
    settings = config.get("config")
    assert isinstance(settings, dict)
    env = [str(e).split("=", 1)[0] for e in settings.get("Env") or []]
    secret = tuple(name for name in env if any(word in name for word in ("SECRET", "PASSWORD", "TOKEN")))
    return LintTruth(
        tuple(sorted(setuid)),
        tuple(sorted(writable)),
        tuple(sorted(keys)),
        secret,
        str(settings.get("User") or ""),
        "Healthcheck" in settings,
    )


def os_release(root: Path) -> dict[str, str]:
    """The fields of the root's os-release, a link followed inside the root (Debian's is one)."""
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = root / candidate
        while path.is_symlink():
            link = os.readlink(path)
            path = root / link.lstrip("/") if link.startswith("/") else path.parent / link
        if path.is_file():
            lines = [line.split("=", 1) for line in path.read_text().splitlines() if "=" in line]
            return {key: value.strip().strip('"') for key, value in lines}
    return {}


# --- the cache ------------------------------------------------------------------------------------------------------


def _cache_key(inputs: object) -> str:
    """The inputs and the code that turns them into an image: a change to either builds anew."""
    code = b"".join(Path(module).read_bytes() for module in (__file__, oracles.__file__))
    return hashlib.sha256(repr(inputs).encode() + code).hexdigest()[:12]


def _cached(name: str, inputs: object, build: Callable[[Path], list[dict[str, object]]]) -> dict[str, BuiltImage]:
    """The images `build` makes in a directory, from the cache or built now; by tag."""
    target = CACHE / f"{name}-{_cache_key(inputs)}"
    record = target / "truth.json"
    with locked(CACHE / f"{name}.lock"):
        if not record.exists():
            for stale in CACHE.glob(f"{name}-*"):  # older builds of this image: their inputs are gone
                subprocess.run(["rm", "-rf", str(stale)], check=False)
            work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
            try:
                truths = build(work)
                (work / "truth.json").write_text(json.dumps(truths, indent=1))
                work.rename(target)
            finally:
                subprocess.run(["rm", "-rf", str(work)], check=False)
    return {t["tag"]: _loaded(t, target) for t in json.loads(record.read_text())}


def _components(records: list[dict[str, Any]]) -> tuple[Component, ...]:
    return tuple(Component(**record) for record in records)


def _loaded(truth: dict[str, Any], cache: Path) -> BuiltImage:
    """A BuiltImage from its truth.json record (JSON has lists where the dataclasses keep tuples)."""
    lint: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value for key, value in truth["lint"].items()
    }
    return BuiltImage(
        name=truth["name"],
        layout=cache / truth["layout"],
        tag=truth["tag"],
        rootfs=cache / truth["rootfs"],
        digest=truth["digest"],
        layers=tuple(truth["layers"]),
        components=_components(truth["components"]),
        snapshots=tuple(_components(snapshot) for snapshot in truth["snapshots"]),
        removed=_components(truth["removed"]),
        lint=LintTruth(**lint),
        distro=dict(truth["distro"]),
    )


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise AssertionError(f"{what} needs root (ownership, setuid bits and chroot in the image's root filesystem)")


# --- debian ---------------------------------------------------------------------------------------------------------


def _extract_base(root: Path) -> None:
    # The base's device nodes stay out: an image's /dev is the runtime's.
    run(["tar", "--numeric-owner", "-xpf", base_rootfs(), "-C", root, "--exclude=./dev/*"], timeout=300)


def _purge_deb(root: Path) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    run(["chroot", root, "dpkg", "--purge", "--force-depends", REMOVED_DEB], env=env)


def _pip_install(cache: Path) -> Callable[[Path], None]:
    def install(root: Path) -> None:
        run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--only-binary=:all:",
             "--disable-pip-version-check", "--cache-dir", cache / "pip", "--target", root / SITE_PACKAGES, *WHEELS],
            env={**os.environ, "PIP_NO_INPUT": "1"}, timeout=300,
        )  # fmt: skip

    return install


def _npm_install(root: Path) -> None:
    project = root / NPM_PROJECT
    project.mkdir(parents=True, exist_ok=True)
    npm = require_tool("npm")
    run([npm, "install", "--prefix", project, *NPM_PACKAGES], env=oracles.npm_environment(), timeout=300)


def _go_build(work: Path) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        source = work / "go-src"
        _write_go_sources(source, work / "go-proxy")
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOPROXY": f"file://{work / 'go-proxy'}",
            "GOSUMDB": "off",
            "GOFLAGS": "-buildvcs=false -mod=mod",
            "GOCACHE": str(CACHE / "go-build"),
            "GOPATH": str(work / "gopath"),
        }
        target = root / GO_BINARY
        target.parent.mkdir(parents=True, exist_ok=True)
        run([require_tool("go"), "build", "-trimpath", "-o", target, "."], env=env, cwd=source, timeout=300)
        subprocess.run(["chmod", "-R", "u+w", str(work / "gopath")], check=False)  # the module cache is read-only

    return build


def _write_go_sources(source: Path, proxy: Path) -> None:
    """A main module needing a replaced local module and a module from a file:// proxy."""
    replaced, replaced_version = GO_REPLACED
    quoted, quoted_version = GO_FROM_PROXY
    (source / "greeting").mkdir(parents=True)
    (source / "go.mod").write_text(
        f"module {GO_MAIN}\n\ngo 1.19\n\nrequire (\n\t{replaced} {replaced_version}\n\t{quoted} {quoted_version}\n)\n\n"
        f"replace {replaced} => ./greeting\n"
    )
    (source / "main.go").write_text(
        f'package main\n\nimport (\n\t"fmt"\n\n\t"{replaced}"\n\t"{quoted}"\n)\n\n'
        "func main() { fmt.Println(greeting.Hello(), quote.Quote()) }\n"
    )
    (source / "greeting/go.mod").write_text(f"module {replaced}\n\ngo 1.19\n")
    (source / "greeting/greeting.go").write_text('package greeting\n\nfunc Hello() string { return "hello" }\n')
    # The module proxy protocol over files (https://go.dev/ref/mod#goproxy-protocol).
    versions = proxy / quoted / "@v"
    versions.mkdir(parents=True)
    mod = f"module {quoted}\n\ngo 1.19\n"
    (versions / "list").write_text(f"{quoted_version}\n")
    (versions / f"{quoted_version}.info").write_text(
        json.dumps({"Version": quoted_version, "Time": "2023-01-01T00:00:00Z"})
    )
    (versions / f"{quoted_version}.mod").write_text(mod)
    with zipfile.ZipFile(versions / f"{quoted_version}.zip", "w") as archive:
        archive.writestr(f"{quoted}@{quoted_version}/go.mod", mod)
        quote = 'package quote\n\nfunc Quote() string { return "quote" }\n'
        archive.writestr(f"{quoted}@{quoted_version}/quote.go", quote)


def _lint_findings(root: Path) -> None:
    suid = root / SETUID_FILE
    suid.write_text("#!/bin/sh\nexec id\n")
    suid.chmod(0o4755)
    (root / WORLD_WRITABLE_DIR).mkdir(parents=True)
    (root / WORLD_WRITABLE_DIR).chmod(0o777)
    # Made now, never kept in the repository: a key nobody has.
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (root / PRIVATE_KEY_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / PRIVATE_KEY_FILE).write_bytes(key)


def _clear_findings(root: Path) -> None:
    """No setuid or setgid bits, nothing writable by all but sticky directories."""
    for directory, dirs, files in os.walk(root):
        for entry in [*dirs, *files]:
            path = Path(directory) / entry
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
            elif mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                path.chmod(stat.S_IMODE(mode) & ~stat.S_IWOTH)
    (root / "app/config").mkdir(parents=True, exist_ok=True)
    (root / "app/config/settings.toml").write_text('listen = "0.0.0.0:8080"\n')


def _build_debian(work: Path) -> list[dict[str, object]]:
    _require_root("the debian test image")
    layout = work / "layout"
    image = ImageBuilder.new(layout, "lint", work / "lint")
    image.layer("debootstrap --variant=minbase --include=python3,python3-venv bookworm", _extract_base)
    image.layer(f"dpkg --purge --force-depends {REMOVED_DEB}", _purge_deb)
    image.layer(f"pip install --target /{SITE_PACKAGES} {' '.join(WHEELS)}", _pip_install(CACHE))
    image.layer(f"npm install --prefix /{NPM_PROJECT} {' '.join(NPM_PACKAGES)}", _npm_install)
    image.layer(f"go build -o /{GO_BINARY} {GO_MAIN}", _go_build(work))
    clean = image.branch("clean", work / "clean")
    image.layer("lint findings: a setuid file, a world-writable directory, a private key", _lint_findings)
    image.configure("--config.env", PATH_ENV, "--config.env", SECRET_ENV, "--config.cmd", f"/{GO_BINARY}")
    clean.layer("no setuid bits, nothing world-writable", _clear_findings)
    clean.configure(
        "--config.env", PATH_ENV, "--config.cmd", f"/{GO_BINARY}", "--config.user", "1000", healthcheck=HEALTHCHECK
    )
    return [image.truth("debian", work), clean.truth("debian", work)]


def debian_image(clean: bool = False) -> BuiltImage:
    """The Debian image (tag `lint`), or with `clean` its variant without lint findings (tag `clean`)."""
    images = _cached(
        "debian", (base_rootfs().name, REMOVED_DEB, WHEELS, NPM_PACKAGES, GO_REPLACED, GO_FROM_PROXY), _build_debian
    )
    return images["clean" if clean else "lint"]


# --- alpine ---------------------------------------------------------------------------------------------------------

ALPINE_OS_RELEASE = """\
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
"""


@dataclass(frozen=True)
class ApkEntry:
    """One package of Alpine 3.19 (x86_64) as its `installed` record has it: name, version, origin,
    licence, maintainer and files are the real package's; sizes, build time and commit are made here."""

    name: str
    version: str
    origin: str
    license: str
    description: str
    url: str
    maintainer: str
    depends: str
    provides: str
    files: tuple[tuple[str, str | None], ...]  # path, and the target if it is a symlink


MUSL = ApkEntry(
    "musl", "1.2.4_git20230717-r4", "musl", "MIT", "the musl c library (libc) implementation",
    "https://musl.libc.org/", "Timo Teräs <timo.teras@iki.fi>", "", "so:libc.musl-x86_64.so.1=1",
    (("lib/ld-musl-x86_64.so.1", None), ("lib/libc.musl-x86_64.so.1", "ld-musl-x86_64.so.1")),
)  # fmt: skip
BUSYBOX = ApkEntry(
    "busybox", "1.36.1-r15", "busybox", "GPL-2.0-only", "Size optimized toolbox of many common UNIX utilities",
    "https://busybox.net/", "Sören Tempel <soeren+alpine@soeren-tempel.net>", "so:libc.musl-x86_64.so.1",
    "cmd:busybox=1.36.1-r15", (("bin/busybox", None),),
)  # fmt: skip
BUSYBOX_BINSH = ApkEntry(
    "busybox-binsh", "1.36.1-r15", "busybox", "GPL-2.0-only", "busybox ash /bin/sh", "https://busybox.net/",
    "Sören Tempel <soeren+alpine@soeren-tempel.net>", "busybox=1.36.1-r15", "/bin/sh cmd:sh=1.36.1-r15",
    (("bin/sh", "/bin/busybox"),),
)  # fmt: skip
ZLIB = ApkEntry(
    "zlib", "1.3.1-r0", "zlib", "Zlib", "A compression/decompression Library", "https://zlib.net/",
    "Natanael Copa <ncopa@alpinelinux.org>", "so:libc.musl-x86_64.so.1", "so:libz.so.1=1.3.1",
    (("lib/libz.so.1", "libz.so.1.3.1"), ("lib/libz.so.1.3.1", None)),
)  # fmt: skip
LIBCRYPTO3 = ApkEntry(
    "libcrypto3", "3.1.4-r5", "openssl", "Apache-2.0", "Crypto library from openssl", "https://www.openssl.org/",
    "Ariadne Conill <ariadne@dereferenced.org>", "so:libc.musl-x86_64.so.1", "so:libcrypto.so.3=3",
    (("lib/libcrypto.so.3", None), ("usr/lib/ossl-modules/legacy.so", None)),
)  # fmt: skip
ALPINE_LAYERS = ((MUSL, BUSYBOX, BUSYBOX_BINSH), (ZLIB, LIBCRYPTO3))


def _q1(data: bytes) -> str:
    """apk's checksum notation: Q1 and the base64 of a SHA-1."""
    return "Q1" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def _apk_record(entry: ApkEntry, root: Path) -> str:
    """The entry's stanza in apk's field order (https://wiki.alpinelinux.org/wiki/Apk_spec), its
    files written into the root; Z: is the SHA-1 of each file's content (or a link's target)."""
    identity = f"{entry.name}-{entry.version}".encode()
    body = [
        f"P:{entry.name}", f"V:{entry.version}", "A:x86_64", f"S:{len(identity) * 1000}", f"I:{len(identity) * 4096}",
        f"T:{entry.description}", f"U:{entry.url}", f"L:{entry.license}", f"o:{entry.origin}", f"m:{entry.maintainer}",
        "t:1700000000", f"c:{hashlib.sha1(identity).hexdigest()}",
    ]  # fmt: skip
    if entry.depends:
        body.append(f"D:{entry.depends}")
    body.append(f"p:{entry.provides}")
    directory = None
    for path, link in entry.files:
        parent, _, base = path.rpartition("/")
        if parent != directory:
            body.append(f"F:{parent}")
            directory = parent
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if link is None:
            content = f"{entry.name} {entry.version}: {path}\n".encode()
            target.write_bytes(content)
            target.chmod(0o755)
            body += [f"R:{base}", "a:0:0:755", f"Z:{_q1(content)}"]
        else:
            target.symlink_to(link)
            body += [f"R:{base}", "a:0:0:777", f"Z:{_q1(link.encode())}"]
    return "\n".join([f"C:{_q1(identity)}", *body]) + "\n"


def _apk_layer(entries: Sequence[ApkEntry], first: bool) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        if first:
            (root / "etc").mkdir(exist_ok=True)
            (root / "etc/os-release").write_text(ALPINE_OS_RELEASE)
        database = root / oracles.APK_INSTALLED
        database.parent.mkdir(parents=True, exist_ok=True)
        earlier = database.read_text() if database.exists() else ""
        database.write_text(earlier + "".join(_apk_record(entry, root) + "\n" for entry in entries))

    return write


def _build_alpine(work: Path) -> list[dict[str, object]]:
    image = ImageBuilder.new(work / "layout", "3.19", work / "bundle")
    for number, entries in enumerate(ALPINE_LAYERS):
        image.layer(f"apk add {' '.join(e.name for e in entries)}", _apk_layer(entries, first=number == 0))
    image.configure("--config.env", PATH_ENV, "--config.cmd", "/bin/sh")
    return [image.truth("alpine", work)]


def alpine_image() -> BuiltImage:
    """Alpine 3.19's os-release and an apk database of five packages in two layers (tag `3.19`)."""
    return _cached("alpine", (ALPINE_OS_RELEASE, ALPINE_LAYERS), _build_alpine)["3.19"]


# --- rpm ------------------------------------------------------------------------------------------------------------

ALMA_OS_RELEASE = """\
NAME="AlmaLinux"
VERSION="9.3 (Shamrock Pampas Cat)"
ID="almalinux"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="AlmaLinux 9.3 (Shamrock Pampas Cat)"
ANSI_COLOR="0;34"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:almalinux:almalinux:9::baseos"
HOME_URL="https://almalinux.org/"
"""


@dataclass(frozen=True)
class RpmSpec:
    name: str
    version: str
    release: str
    license: str
    epoch: int | None = None

    def text(self) -> str:
        epoch = [f"Epoch: {self.epoch}"] if self.epoch is not None else []
        header = [f"Name: {self.name}", *epoch, f"Version: {self.version}", f"Release: {self.release}"]
        return "\n".join(header) + textwrap.dedent(f"""
            Summary: A package of cargohold's SBOM tests
            License: {self.license}
            BuildArch: noarch

            %description
            One file, so the rpmdb has a real entry with a file list.

            %install
            mkdir -p %{{buildroot}}/usr/share/{self.name}
            echo '{self.name} {self.version}' > %{{buildroot}}/usr/share/{self.name}/README

            %files
            /usr/share/{self.name}/README
            """)


RPMS = (
    (RpmSpec("fixture-hello", "1.2.3", "1.el9", "MIT"),),
    (RpmSpec("fixture-data", "0.9", "4.el9", "GPL-2.0-or-later", epoch=2),),
)
RPM_DB = ("--dbpath", "/var/lib/rpm", "--define", "_db_backend sqlite")


def _rpmbuild(spec: RpmSpec, work: Path) -> Path:
    top = work / "rpmbuild"
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    spec_file = top / "SPECS" / f"{spec.name}.spec"
    spec_file.write_text(spec.text())
    run([require_tool("rpmbuild"), "--define", f"_topdir {top}", "-bb", spec_file], timeout=300)
    return next((top / "RPMS" / "noarch").glob(f"{spec.name}-*.rpm"))


def _rpm_layer(specs: Sequence[RpmSpec], work: Path, first: bool) -> Callable[[Path], None]:
    def install(root: Path) -> None:
        rpm = require_tool("rpm")
        if first:
            (root / "etc").mkdir(exist_ok=True)
            (root / "etc/os-release").write_text(ALMA_OS_RELEASE)
            run([rpm, "--root", root, *RPM_DB, "--initdb"])
        packages = [_rpmbuild(spec, work) for spec in specs]
        run([rpm, "--root", root, *RPM_DB, "-i", "--nodeps", "--noscripts", "--nosignature", *packages])

    return install


def _build_rpm(work: Path) -> list[dict[str, object]]:
    _require_root("the rpm test image")
    image = ImageBuilder.new(work / "layout", "9", work / "bundle")
    for number, specs in enumerate(RPMS):
        image.layer(f"rpm -i {' '.join(s.name for s in specs)}", _rpm_layer(specs, work, first=number == 0))
    image.configure("--config.env", PATH_ENV)
    truth = image.truth("rpm", work)
    assert (image.rootfs / oracles.RPMDB).exists(), f"rpm wrote no {oracles.RPMDB}"
    return [truth]


def rpm_image() -> BuiltImage:
    """AlmaLinux 9's os-release and a sqlite rpmdb of two rpms in two layers (tag `9`)."""
    return _cached("rpm", (ALMA_OS_RELEASE, RPMS, RPM_DB), _build_rpm)["9"]


# --- into a registry --------------------------------------------------------------------------------------------------


def push(image: BuiltImage, registry: ServerProcess, repo: str, cli: CargoholdCLI) -> str:
    """Copy the image into `registry` as REPO:TAG with the cargohold CLI; returns the reference."""
    reference = f"{registry.host}/{repo}:{image.tag}"
    cli.run("copy", image.reference, reference)
    return reference
