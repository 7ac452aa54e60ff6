"""Image layers made in the test: tar members written into memory, compressed as asked, and
handed to the walk as (digest, media type, open) the way a registry's blob store would."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from .servers import require_tool

MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}

Layer = tuple[str, str, Callable[[], BinaryIO]]


class LayerBuilder:
    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed by tar()

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None) -> LayerBuilder:
        info.mtime = 1700000000
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def file(self, path: str, data: bytes | str, mode: int = 0o644, uid: int = 0) -> LayerBuilder:
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.uid = len(raw), mode, uid
        return self._add(info, raw)

    def dir(self, path: str, mode: int = 0o755) -> LayerBuilder:
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, mode
        return self._add(info)

    def symlink(self, path: str, target: str) -> LayerBuilder:
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        return self._add(info)

    def hardlink(self, path: str, target: str) -> LayerBuilder:
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mode = tarfile.LNKTYPE, target, 0o755
        return self._add(info)

    def whiteout(self, path: str) -> LayerBuilder:
        parent, _, name = path.rpartition("/")
        return self.file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", b"")

    def opaque(self, directory: str) -> LayerBuilder:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def tar(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()

    def layer(self, compression: str = "gzip", media_type: str | None = None) -> Layer:
        return blob_layer(compress(self.tar(), compression), media_type or MEDIA_TYPES[compression])


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def blob_layer(blob: bytes, media_type: str) -> Layer:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    return digest, media_type, lambda: io.BytesIO(blob)


class GeneratedStream(io.RawIOBase):
    """A readable stream whose bytes a generator makes as they are read: a large layer that is
    never held, in memory or on disk."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def tar_member(path: str, size: int, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = size, mode, 1700000000
    return info.tobuf(format=tarfile.PAX_FORMAT)


def padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


# --- real package databases and binaries ------------------------------------------------------

RPM_SPEC = """Name: {name}
Version: {version}
Release: {release}
{epoch}Summary: a test package
License: {license}
BuildArch: x86_64
%description
A package with no files, for its header in an rpmdb.
%files
"""


def build_rpmdb(work: Path, packages: list[dict[str, str]]) -> bytes:
    """An rpmdb.sqlite made by rpm itself: each package built with rpmbuild, then installed
    into a fresh database with --justdb (the files are not needed, only the headers)."""
    rpmbuild, rpm = require_tool("rpmbuild"), require_tool("rpm")
    top, db = work / "rpmbuild", work / "rpmdb"
    db.mkdir(parents=True)
    built = []
    for package in packages:
        epoch = f"Epoch: {package['epoch']}\n" if package.get("epoch") else ""
        spec = work / f"{package['name']}.spec"
        spec.write_text(RPM_SPEC.format(epoch=epoch, **{k: v for k, v in package.items() if k != "epoch"}))
        subprocess.run([rpmbuild, "-bb", "--define", f"_topdir {top}", str(spec)], check=True, capture_output=True)
        built += sorted((top / "RPMS" / "x86_64").glob(f"{package['name']}-{package['version']}-*.rpm"))
    backend = ["--define", "_db_backend sqlite"]
    subprocess.run([rpm, *backend, "--initdb", "--dbpath", str(db)], check=True, capture_output=True)
    subprocess.run(
        [rpm, *backend, "-i", "--justdb", "--nodeps", "--dbpath", str(db), *map(str, built)],
        check=True,
        capture_output=True,
    )
    return (db / "rpmdb.sqlite").read_bytes()


GO_MAIN = """package main

import (
\t"fmt"

\t"example.com/greeting"
)

func main() { fmt.Println(greeting.Hello()) }
"""


def build_go_binary(work: Path) -> bytes:
    """A Go program whose one dependency is `replace`d by a local directory, built offline, so
    its build information has a `dep` line and a `=>` line."""
    go = require_tool("go")
    (work / "greeting").mkdir(parents=True)
    (work / "greeting" / "go.mod").write_text("module example.com/greeting\n\ngo 1.19\n")
    (work / "greeting" / "greeting.go").write_text('package greeting\n\nfunc Hello() string { return "hello" }\n')
    (work / "app").mkdir()
    (work / "app" / "go.mod").write_text(
        "module example.com/app\n\ngo 1.19\n\nrequire example.com/greeting v1.2.3\n\n"
        "replace example.com/greeting => ../greeting\n"
    )
    (work / "app" / "main.go").write_text(GO_MAIN)
    environment = {
        "PATH": str(Path(go).parent) + ":/usr/bin:/bin",
        "HOME": str(work),
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }
    output = work / "app-binary"
    subprocess.run([go, "build", "-o", str(output), "."], cwd=work / "app", env=environment, check=True)
    return output.read_bytes()


def go_version() -> str:
    out = subprocess.run([require_tool("go"), "env", "GOVERSION"], check=True, capture_output=True, text=True)
    return out.stdout.strip().removeprefix("go")
