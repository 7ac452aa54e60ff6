"""`docker save` / `podman save` tarballs (docker-archive): read one image out, write one that `docker load` takes.

Reading never extracts: each layer is a region of the tar file, streamed from its offset. The
layers in such a tarball are uncompressed tars whose digests are the config's `rootfs.diff_ids`;
they are pushed as they are (`application/vnd.oci.image.layer.v1.tar`), so nothing is recompressed
and the digests are known before any byte is read. A member that is already gzip-compressed is
hashed first. Every layer is checked against its digest while it streams.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from .errors import ClientError, NotFoundError
from .layout import OCILayout

OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Member:
    """A file inside the tarball: where its bytes start and how many there are."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class ArchiveImage:
    config: bytes
    layers: tuple[tuple[Member, str, str], ...]  # (member, digest, media type)
    repo_tags: tuple[str, ...]

    def manifest(self) -> bytes:
        document = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(self.config)), "size": len(self.config)},
            "layers": [
                {"mediaType": media_type, "digest": digest, "size": member.size}
                for member, digest, media_type in self.layers
            ],
        }
        return json.dumps(document, separators=(",", ":")).encode()


class DockerArchive:
    """A docker-archive tarball opened for reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file_size = path.stat().st_size
            with open(path, "rb") as handle:
                magic = handle.read(3)
            if magic[:2] == b"\x1f\x8b" or magic == b"BZh" or magic[:3] == b"\xfd7z":
                raise ClientError(
                    f"{path} is compressed: decompress it first (docker load does, the stream cannot seek)"
                )
            with tarfile.open(path, "r:") as tar:
                self.members = {
                    info.name.removeprefix("./"): Member(info.name, info.offset_data, info.size)
                    for info in tar
                    if info.isfile()
                }
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ClientError(f"{path} is not a readable tar archive: {err}") from None
        for member in self.members.values():
            if member.offset + member.size > self.file_size:
                raise ClientError(f"{path} is truncated: {member.name} ends past the end of the file")
        if "manifest.json" not in self.members:
            raise ClientError(f"{path} is not a docker-archive: it has no manifest.json (was it made by docker save?)")
        try:
            self.entries = json.loads(self.read("manifest.json"))
        except ValueError as err:
            raise ClientError(f"{path}: manifest.json is not JSON: {err}") from None
        if not isinstance(self.entries, list) or not self.entries:
            raise ClientError(f"{path}: manifest.json lists no images")

    def read(self, name: str) -> bytes:
        member = self._member(name)
        with open(self.path, "rb") as handle:
            handle.seek(member.offset)
            data = handle.read(member.size)
        if len(data) != member.size:
            raise ClientError(f"{self.path} is truncated in {name}")
        return data

    def _member(self, name: str) -> Member:
        member = self.members.get(name.removeprefix("./"))
        if member is None:
            raise ClientError(f"{self.path} lacks {name}, which its manifest.json names")
        return member

    def image(self, reference: str | None = None) -> ArchiveImage:
        """The image tagged `reference` (e.g. `app:v1`), or the only one."""
        entry = self._entry(reference)
        config = self.read(entry["Config"])
        try:
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError):
            raise ClientError(f"{self.path}: {entry['Config']} is not an image config with rootfs.diff_ids") from None
        names = entry.get("Layers") or []
        if len(names) != len(diff_ids):
            raise ClientError(f"{self.path}: {len(names)} layers but the config lists {len(diff_ids)} diff_ids")
        layers = []
        for name, diff_id in zip(names, diff_ids, strict=True):
            member = self._member(name)
            if self._is_gzip(member):
                # docker 25+ (and our pull) name layers blobs/sha256/<hex>: the name is the digest to check
                layers.append((member, _digest_in_name(name) or self._hash(member), OCI_LAYER_GZIP))
            else:
                layers.append((member, diff_id, OCI_LAYER_TAR))
        return ArchiveImage(config, tuple(layers), tuple(entry.get("RepoTags") or ()))

    def _entry(self, reference: str | None) -> dict[str, Any]:
        if reference is None:
            if len(self.entries) == 1:
                return self.entries[0]
            tags = [t for e in self.entries for t in (e.get("RepoTags") or [])]
            raise ClientError(f"{self.path} holds {len(self.entries)} images; name one of: {', '.join(tags)}")
        for entry in self.entries:
            for tag in entry.get("RepoTags") or []:
                if reference in (tag, tag.rsplit("/", 1)[-1]) or tag.endswith("/" + reference):
                    return entry
        raise NotFoundError(f"{self.path} has no image tagged {reference!r}")

    def _is_gzip(self, member: Member) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(member.offset)
            return handle.read(2) == b"\x1f\x8b"

    def _hash(self, member: Member) -> str:
        import hashlib

        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            handle.seek(member.offset)
            left = member.size
            while left:
                data = handle.read(min(left, 1024 * 1024))
                if not data:
                    raise ClientError(f"{self.path} is truncated in {member.name}")
                digest.update(data)
                left -= len(data)
        return f"sha256:{digest.hexdigest()}"


def _digest_in_name(name: str) -> str | None:
    parts = name.removeprefix("./").split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256" and len(parts[2]) == 64:
        return f"sha256:{parts[2]}"
    return None


def write_docker_archive(layout: OCILayout, manifest_digest: str, target: Path, repo_tags: list[str]) -> None:
    """Write the layout's image as a tarball `docker load` accepts; through a temp file, renamed at the end."""
    manifest = json.loads(layout.read_blob(manifest_digest))
    if "layers" not in manifest:
        raise ClientError("a docker-archive holds a single-platform image; choose one with --platform")
    config_digest = manifest["config"]["digest"]
    config_name = "blobs/{}/{}".format(*config_digest.split(":", 1))
    layer_names = []
    entries: list[tuple[str, Path]] = [(config_name, layout.blob_path(config_digest))]
    for layer in manifest["layers"]:
        algorithm, hex_digest = layer["digest"].split(":", 1)
        name = f"blobs/{algorithm}/{hex_digest}"  # docker 25's names: the digest travels with the file
        if name not in layer_names:
            entries.append((name, layout.blob_path(layer["digest"])))
        layer_names.append(name)
    index = [{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}]
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".tmp-{target.name}-")
    os.close(fd)
    try:
        with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, path in entries:
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            data = json.dumps(index).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            info.mode = 0o644
            import io

            tar.addfile(info, io.BytesIO(data))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
