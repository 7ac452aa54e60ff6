"""The copy engine: move an image (or an index and all its images, and their referrers) from a
source to a destination, blobs in parallel, skipping what the destination has.

Sources: a registry repository, an OCI layout, a docker-archive tarball, files (an artifact).
Destinations: a registry repository, an OCI layout, a docker-archive tarball.

    >>> result = await copy_image(source, destination, all_platforms=True, jobs=4)   # doctest: +SKIP
    >>> result.digest, result.uploaded, result.skipped
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.errors import RegistryError
from ..oci.manifest import Descriptor, Manifest, parse_descriptor, parse_manifest
from ..oci.platform import Platform, host_platform
from .archive import DockerArchive, write_docker_archive
from .blobs import Opener, download_to_file, file_opener, upload_blob
from .errors import ClientError, IntegrityError, NotFoundError
from .layout import OCILayout
from .progress import NullReporter, Reporter
from .registry import RegistryClient, media_type_of


def descriptor_of(value: Any, label: str) -> Descriptor:
    """A descriptor another store handed us, as oci's model; a ClientError if it is not one."""
    try:
        return parse_descriptor(value)
    except RegistryError as err:
        raise ClientError(f"{label}: {err.message}") from None


def manifest_of(payload: bytes, media_type: str, digest: str, label: str) -> Manifest:
    """A manifest read from a source, parsed by the rules the registry applies to a push."""
    try:
        return parse_manifest(payload, media_type)
    except RegistryError as err:
        raise ClientError(f"{label}: manifest {digest} is not valid: {err.message}") from None


class Source(Protocol):
    """Where an image comes from."""

    label: str

    async def resolve(self) -> tuple[bytes, str, str]:
        """The root manifest: (payload, media type, digest)."""
        ...

    async def manifest(self, digest: str) -> tuple[bytes, str]: ...
    def opener(self, blob: Descriptor) -> Opener: ...
    async def referrers(self, digest: str) -> list[dict[str, Any]]: ...


class Destination(Protocol):
    label: str

    async def has_blob(self, blob: Descriptor) -> bool: ...
    async def put_blob(self, blob: Descriptor, source: Source, reporter: Reporter) -> str: ...
    async def put_manifest(self, payload: bytes, media_type: str, digest: str, tag: str | None) -> None: ...
    async def finish(self) -> None: ...
    async def abort(self) -> None: ...


# --- sources -----------------------------------------------------------------------------------------------------


class RegistrySource:
    def __init__(self, client: RegistryClient, repo: str, reference: str) -> None:
        self.client, self.repo, self.reference = client, repo, reference
        self.label = f"{client.host}/{repo}"

    async def resolve(self) -> tuple[bytes, str, str]:
        return await self.client.get_manifest(self.repo, self.reference)

    async def manifest(self, digest: str) -> tuple[bytes, str]:
        payload, media_type, _ = await self.client.get_manifest(self.repo, digest)
        return payload, media_type

    def opener(self, blob: Descriptor) -> Opener:
        return lambda offset: self.client.stream_blob(self.repo, str(blob.digest), offset)

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        return await self.client.referrers(self.repo, digest)


class LayoutSource:
    def __init__(self, layout: OCILayout, reference: str | None) -> None:
        self.layout, self.reference = layout, reference
        self.label = str(layout.path)

    async def resolve(self) -> tuple[bytes, str, str]:
        entry = self.layout.resolve(self.reference)
        payload = self.layout.read_blob(entry["digest"])
        return payload, entry.get("mediaType") or media_type_of(payload) or mt.OCI_MANIFEST, entry["digest"]

    async def manifest(self, digest: str) -> tuple[bytes, str]:
        payload = self.layout.read_blob(digest)
        return payload, media_type_of(payload) or mt.OCI_MANIFEST

    def opener(self, blob: Descriptor) -> Opener:
        return file_opener(self.layout.blob_path(str(blob.digest)))

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        found = []
        for entry in self.layout.index().get("manifests", []):
            if entry.get("digest") == digest:
                continue
            try:
                document = json.loads(self.layout.read_blob(entry["digest"]))
            except (ClientError, ValueError):
                continue
            if (document.get("subject") or {}).get("digest") == digest:
                found.append(entry)
        return found


class _StaticSource:
    """A source whose manifest and config are made here and whose blobs are file regions."""

    label: str

    def __init__(self, manifest: bytes, blobs: dict[str, tuple[Path, int]], small: dict[str, bytes]) -> None:
        self._manifest = manifest
        self._blobs = blobs  # digest -> (file, offset)
        self._small = small  # digest -> bytes (config, empty blob)

    async def resolve(self) -> tuple[bytes, str, str]:
        return self._manifest, mt.OCI_MANIFEST, str(Digest.of(self._manifest))

    async def manifest(self, digest: str) -> tuple[bytes, str]:
        raise NotFoundError(f"{self.label} has no manifest {digest}")

    def opener(self, blob: Descriptor) -> Opener:
        key = str(blob.digest)
        if key in self._small:
            data = self._small[key]

            async def chunks(offset: int) -> AsyncGenerator[bytes, None]:
                yield data[offset:]

            return chunks
        path, start = self._blobs[key]
        return file_opener(path, start)

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        return []


class ArchiveSource(_StaticSource):
    def __init__(self, archive: DockerArchive, reference: str | None) -> None:
        image = archive.image(reference)
        blobs = {digest: (archive.path, member.offset) for member, digest, _ in image.layers}
        super().__init__(image.manifest(), blobs, {str(Digest.of(image.config)): image.config})
        self.label = str(archive.path)


EMPTY_JSON = b"{}"
TITLE = "org.opencontainers.image.title"


class ArtifactSource(_StaticSource):
    """Files pushed as an OCI artifact: empty config, one layer per file titled with its name."""

    def __init__(
        self,
        files: list[tuple[Path, str]],
        artifact_type: str,
        annotations: dict[str, str] | None = None,
        subject: dict[str, Any] | None = None,
    ) -> None:
        layers = []
        blobs: dict[str, tuple[Path, int]] = {}
        for path, media_type in files:
            digest = _hash_file(path)
            blobs[digest] = (path, 0)
            layers.append(
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": path.stat().st_size,
                    "annotations": {TITLE: path.name},
                }
            )
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": mt.OCI_EMPTY, "digest": str(Digest.of(EMPTY_JSON)), "size": 2},
            "layers": layers,
        }
        if subject:
            document["subject"] = subject
        if annotations:
            document["annotations"] = annotations
        super().__init__(
            json.dumps(document, separators=(",", ":")).encode(), blobs, {str(Digest.of(EMPTY_JSON)): EMPTY_JSON}
        )
        self.label = "files"


def _hash_file(path: Path) -> str:
    import hashlib

    try:
        with open(path, "rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as err:
        raise ClientError(f"cannot read {path}: {err.strerror}") from None


# --- destinations ------------------------------------------------------------------------------------------------


class RegistryDestination:
    def __init__(self, client: RegistryClient, repo: str, tag: str | None) -> None:
        self.client, self.repo, self.tag = client, repo, tag
        self.label = f"{client.host}/{repo}"

    async def has_blob(self, blob: Descriptor) -> bool:
        scopes = [f"repository:{self.repo}:pull,push"]
        size = await self.client.blob_size(self.repo, str(blob.digest), scopes=scopes)
        return size is not None

    async def put_blob(self, blob: Descriptor, source: Source, reporter: Reporter) -> str:
        mount_from = None
        if isinstance(source, RegistrySource) and source.client.host == self.client.host and source.repo != self.repo:
            mount_from = source.repo
        tracker = reporter.blob(blob.digest.encoded[:12], blob.size)
        return await upload_blob(
            self.client, self.repo, str(blob.digest), blob.size, source.opener(blob), tracker, mount_from=mount_from
        )

    async def put_manifest(self, payload: bytes, media_type: str, digest: str, tag: str | None) -> None:
        await self.client.put_manifest(self.repo, tag or digest, payload, media_type)

    async def finish(self) -> None:
        pass

    async def abort(self) -> None:
        pass


class LayoutDestination:
    """An OCI layout, created on the first write: a pull that fails early leaves no directory behind."""

    def __init__(self, path: Path, tag: str | None, retries: int = 4) -> None:
        self.path, self.tag, self.retries = path, tag, retries
        self.label = str(path)
        self.root: tuple[bytes, str, str] | None = None
        self._layout: OCILayout | None = None

    @property
    def layout(self) -> OCILayout:
        if self._layout is None:
            self._layout = OCILayout(self.path, create=True)
        return self._layout

    async def has_blob(self, blob: Descriptor) -> bool:
        return self.path.exists() and self.layout.has_blob(str(blob.digest), blob.size)

    async def put_blob(self, blob: Descriptor, source: Source, reporter: Reporter) -> str:
        digest = str(blob.digest)
        target = self.layout.prepare_blob_dir(digest)
        tracker = reporter.blob(blob.digest.encoded[:12], blob.size)
        await download_to_file(source.opener(blob), digest, blob.size, target, tracker, retries=self.retries)
        return "downloaded"

    async def put_manifest(self, payload: bytes, media_type: str, digest: str, tag: str | None) -> None:
        self.layout.write_blob(payload)
        if tag is not None or self.root is None:
            self.root = (payload, media_type, digest)
        if tag is not None:
            self.layout.tag({"mediaType": media_type, "digest": digest, "size": len(payload)}, tag)

    async def finish(self) -> None:
        pass

    async def abort(self) -> None:
        pass


class ArchiveDestination:
    """A docker-archive: the image is gathered in a temporary layout beside the target, then written as one tar."""

    def __init__(self, target: Path, repo_tags: list[str], retries: int = 4) -> None:
        self.target = target
        self.repo_tags = repo_tags
        target.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        self.inner = LayoutDestination(self.staging, "image", retries)
        self.label = str(target)

    async def has_blob(self, blob: Descriptor) -> bool:
        return await self.inner.has_blob(blob)

    async def put_blob(self, blob: Descriptor, source: Source, reporter: Reporter) -> str:
        return await self.inner.put_blob(blob, source, reporter)

    async def put_manifest(self, payload: bytes, media_type: str, digest: str, tag: str | None) -> None:
        if media_type in mt.INDEXES:
            raise ClientError("a docker-archive holds one single-platform image: drop --all or pick --platform")
        await self.inner.put_manifest(payload, media_type, digest, "image")

    async def finish(self) -> None:
        try:
            assert self.inner.root is not None
            write_docker_archive(self.inner.layout, self.inner.root[2], self.target, self.repo_tags)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    async def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


# --- the engine --------------------------------------------------------------------------------------------------


@dataclass
class CopyResult:
    digest: str
    media_type: str
    size: int
    manifests: list[str] = field(default_factory=list)
    uploaded: int = 0
    skipped: int = 0
    mounted: int = 0
    bytes_moved: int = 0
    referrers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "manifests": self.manifests,
            "blobs": {"transferred": self.uploaded, "skipped": self.skipped, "mounted": self.mounted},
            "bytes": self.bytes_moved,
            "referrers": self.referrers,
        }


def select_platform(index: Manifest, wanted: Platform) -> Descriptor:
    """The index entry for a platform; a clear error listing what there is otherwise."""
    for child in index.children:
        found = Platform.from_descriptor(child.platform)
        if found is not None and wanted.matches(found):
            return child
    available = ", ".join(str(Platform.from_descriptor(c.platform) or "?") for c in index.children)
    raise NotFoundError(f"the index has no image for {wanted} (it has: {available or 'nothing'})")


class _Copier:
    def __init__(self, source: Source, destination: Destination, jobs: int, reporter: Reporter) -> None:
        self.source, self.destination, self.reporter = source, destination, reporter
        self.limit = asyncio.Semaphore(max(1, jobs))
        self.result: CopyResult | None = None
        self.done_blobs: dict[Digest, asyncio.Task[None]] = {}
        self.counts = {"uploaded": 0, "skipped": 0, "mounted": 0, "bytes": 0}

    async def blob(self, blob: Descriptor) -> None:
        async with self.limit:
            if await self.destination.has_blob(blob):
                self.counts["skipped"] += 1
                return
            how = await self.destination.put_blob(blob, self.source, self.reporter)
            if how == "mounted":
                self.counts["mounted"] += 1
            else:
                self.counts["uploaded"] += 1
                self.counts["bytes"] += blob.size

    def blob_task(self, blob: Descriptor) -> asyncio.Task[None]:
        """One transfer per digest, however many manifests share the blob."""
        task = self.done_blobs.get(blob.digest)
        if task is None:
            task = asyncio.ensure_future(self.blob(blob))
            self.done_blobs[blob.digest] = task
        return task

    async def manifest(self, payload: bytes, media_type: str, digest: str, tag: str | None, copied: list[str]) -> None:
        manifest = manifest_of(payload, media_type, digest, self.source.label)
        for child in manifest.children:
            child_payload, _ = await self.source.manifest(str(child.digest))
            await self.manifest(child_payload, child.media_type, str(child.digest), None, copied)
        await asyncio.gather(*(self.blob_task(blob) for blob in manifest.required_blobs))
        await self.destination.put_manifest(payload, media_type, digest, tag)
        copied.append(digest)

    async def referrers(self, digest: str, copied: list[str], seen: set[str]) -> None:
        for entry in await self.source.referrers(digest):
            child = entry["digest"]
            if child in seen:
                continue
            seen.add(child)
            payload, media_type = await self.source.manifest(child)
            await self.manifest(payload, entry.get("mediaType") or media_type, child, None, copied)
            await self.referrers(child, copied, seen)


async def copy_image(
    source: Source,
    destination: Destination,
    *,
    tag: str | None = None,
    all_platforms: bool = False,
    platform: Platform | None = None,
    referrers: bool = False,
    jobs: int = 4,
    reporter: Reporter | None = None,
) -> CopyResult:
    """Copy the source's image to the destination under `tag` (None: by digest only).

    An index is copied whole with `all_platforms`; otherwise the image for `platform` (default:
    this machine's) is picked from it. With `referrers`, every manifest whose subject is one
    that was copied goes along, recursively.
    """
    reporter = reporter or NullReporter()
    copier = _Copier(source, destination, jobs, reporter)
    try:
        payload, media_type, digest = await source.resolve()
        if media_type in mt.INDEXES and not all_platforms:
            index = manifest_of(payload, media_type, digest, source.label)
            child = select_platform(index, platform or host_platform())
            digest = str(child.digest)
            payload, media_type = await source.manifest(digest)
        if str(Digest.of(payload, digest.split(":", 1)[0])) != digest:
            raise IntegrityError(f"{source.label}: manifest {digest} does not match its digest")
        copied: list[str] = []
        await copier.manifest(payload, media_type, digest, tag, copied)
        result = CopyResult(digest, media_type, len(payload), manifests=list(copied))
        if referrers:
            extra: list[str] = []
            seen: set[str] = set(copied)
            for manifest_digest in list(copied):
                await copier.referrers(manifest_digest, extra, seen)
            result.referrers = extra
        await destination.finish()
    except BaseException:
        for task in copier.done_blobs.values():
            task.cancel()
        await destination.abort()
        raise
    finally:
        reporter.close()
    result.uploaded = copier.counts["uploaded"]
    result.skipped = copier.counts["skipped"]
    result.mounted = copier.counts["mounted"]
    result.bytes_moved = copier.counts["bytes"]
    return result
