"""The client library's front door: one `Client` for every registry, layout and tarball.

    >>> import asyncio
    >>> from cargohold.client import Client
    >>> async def main():                                                       # doctest: +SKIP
    ...     async with Client() as client:
    ...         pushed = await client.copy("oci:./img:v1", "127.0.0.1:5000/team/app:v1")
    ...         print(pushed.digest)
    ...         info = await client.inspect("127.0.0.1:5000/team/app:v1")
    ...         print(info["platforms"] or info["layers"])
    ...         await client.tag("127.0.0.1:5000/team/app:v1", ["stable"])
    ...         await client.copy("127.0.0.1:5000/team/app:v1", "app.tar")          # for docker load
    >>> asyncio.run(main())                                                     # doctest: +SKIP

Locations are strings as skopeo writes them (`oci:DIR[:TAG]`, `docker-archive:FILE[:NAME]`,
`[docker://]HOST/REPO[:TAG|@DIGEST]`) or `Location` values. Credentials come from docker's
config.json and credential helpers (see `credentials.py`); every failure is a `ClientError`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.location import PREFIXES, Location, parse_location
from ..oci.manifest import Descriptor, Manifest
from ..oci.platform import Platform, host_platform
from ..oci.reference import Reference, ReferenceError, parse_reference, parse_registry
from .archive import DockerArchive
from .credentials import Credentials, CredentialStore
from .errors import ClientError, IntegrityError
from .layout import OCILayout
from .progress import NullReporter, Reporter
from .registry import Options, RegistryClient
from .transfer import (
    ArchiveDestination,
    ArchiveSource,
    ArtifactSource,
    CopyResult,
    Destination,
    LayoutDestination,
    LayoutSource,
    RegistryDestination,
    RegistrySource,
    Source,
    copy_image,
    manifest_of,
    select_platform,
)


def location(value: str | Location, *, local: bool = False) -> Location:
    """Parse a location written as skopeo writes them (`oci:`, `docker-archive:`, `docker://`).

    A bare string is a local path when it exists or ends in `.tar`, else an image reference.
    With `local` (push's source, pull's destination) a bare string is a path unless its first
    component names a registry host (`127.0.0.1:5000/...`, `registry.example.com/...`).
    """
    if isinstance(value, Location):
        return value
    try:
        if value.startswith(tuple(PREFIXES)):
            return parse_location(value)
        path = Path(value)
        first = value.split("/", 1)[0]
        names_host = (
            "/" in value and first not in (".", "..") and ("." in first or ":" in first or first == "localhost")
        )
        if path.exists() or value.endswith(".tar") or (local and not names_host):
            if value.endswith(".tar") or path.is_file():
                return parse_location(value, default="docker-archive")
            return parse_location(value, default="oci")
        return parse_location(value)
    except (ReferenceError, ValueError) as err:
        raise ClientError(str(err)) from None


@dataclass(frozen=True)
class Image:
    """An image as `Client.image` found it: where from, its manifest, its config's bytes."""

    source: Source
    digest: str
    payload: bytes
    manifest: Manifest
    config: bytes


class Client:
    """Talks to any number of registries; one HTTP connection pool per registry host."""

    def __init__(
        self,
        options: Options | None = None,
        credentials: CredentialStore | None = None,
        reporter: Reporter | None = None,
        *,
        override: dict[str, Credentials] | None = None,
    ) -> None:
        self.options = options or Options()
        self.credentials = credentials or CredentialStore()
        self.reporter = reporter or NullReporter()
        self.override = override or {}
        self._registries: dict[str, RegistryClient] = {}

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for registry in self._registries.values():
            await registry.aclose()
        self._registries.clear()

    def registry(self, host: str) -> RegistryClient:
        """The HTTP client for a registry host (`docker.io` is served by registry-1.docker.io)."""
        name = parse_registry(host)
        if name not in self._registries:
            creds = self.override.get(name) or self.credentials.get(name)
            api = "registry-1.docker.io" if name == "docker.io" else name
            self._registries[name] = RegistryClient(api, creds, self.options)
        return self._registries[name]

    def _ref(self, value: str | Reference) -> Reference:
        if isinstance(value, Reference):
            return value
        try:
            return parse_reference(value)
        except ReferenceError as err:
            raise ClientError(str(err)) from None

    # --- transfers --------------------------------------------------------------------------------------------

    def source(self, where: Location) -> Source:
        if where.transport == "registry":
            assert where.reference is not None
            ref = where.reference
            return RegistrySource(self.registry(ref.registry), ref.repository, ref.reference)
        assert where.path is not None
        if where.transport == "oci":
            return LayoutSource(OCILayout(Path(where.path)), where.name)
        return ArchiveSource(DockerArchive(Path(where.path)), where.name)

    def destination(self, where: Location, source_label: str | None = None) -> tuple[Destination, str | None]:
        """(destination, tag to write)."""
        if where.transport == "registry":
            assert where.reference is not None
            ref = where.reference
            tag = None if ref.digest and ref.tag is None else ref.tag or "latest"
            return RegistryDestination(self.registry(ref.registry), ref.repository, tag), tag
        assert where.path is not None
        if where.transport == "oci":
            return LayoutDestination(Path(where.path), where.name, self.options.retries), where.name
        repo_tags = [where.name] if where.name else []
        return ArchiveDestination(Path(where.path), repo_tags, self.options.retries), None

    async def copy(
        self,
        source: str | Location,
        destination: str | Location,
        *,
        all_platforms: bool = False,
        platform: str | Platform | None = None,
        referrers: bool = False,
    ) -> CopyResult:
        """Copy an image between any two locations; blobs the destination has are skipped."""
        src = self.source(location(source))
        dst_location = location(destination)
        if dst_location.transport == "docker-archive" and all_platforms:
            raise ClientError("a docker-archive holds one single-platform image: drop --all or pick --platform")
        dst, tag = self.destination(dst_location)
        if isinstance(platform, str):
            try:
                platform = Platform.parse(platform)
            except ValueError as err:
                raise ClientError(str(err)) from None
        if dst_location.transport == "docker-archive" and not dst_location.name and isinstance(src, RegistrySource):
            assert isinstance(dst, ArchiveDestination)
            ref = src.reference if ":" not in src.reference else None
            dst.repo_tags = [f"{src.client.host}/{src.repo}:{ref}"] if ref else []
        return await copy_image(
            src,
            dst,
            tag=tag,
            all_platforms=all_platforms,
            platform=platform,
            referrers=referrers,
            jobs=self.options.jobs,
            reporter=self.reporter,
        )

    async def push_artifact(
        self,
        files: list[tuple[Path, str]],
        destination: str | Reference,
        artifact_type: str,
        *,
        annotations: dict[str, str] | None = None,
        subject: str | None = None,
    ) -> CopyResult:
        """Push files as an OCI artifact (empty config, a layer per file); `subject` makes it a referrer."""
        ref = self._ref(destination)
        subject_descriptor = None
        if subject:
            subject_ref = ref.with_reference(subject) if "/" not in subject else self._ref(subject)
            payload, media_type, digest = await self.registry(subject_ref.registry).get_manifest(
                subject_ref.repository, subject_ref.reference
            )
            subject_descriptor = {"mediaType": media_type, "digest": digest, "size": len(payload)}
        src = ArtifactSource(files, artifact_type, annotations, subject_descriptor)
        dst, tag = self.destination(Location("registry", reference=ref))
        if subject_descriptor and ref.tag is None:
            tag = None
            dst = RegistryDestination(self.registry(ref.registry), ref.repository, None)
        return await copy_image(src, dst, tag=tag, jobs=self.options.jobs, reporter=self.reporter)

    # --- registry operations ----------------------------------------------------------------------------------

    async def manifest(self, where: str | Location) -> tuple[bytes, str, str]:
        """(payload, media type, digest) of what a location names."""
        return await self.source(location(where)).resolve()

    async def digest(self, where: str | Location) -> str:
        return (await self.manifest(where))[2]

    async def tag(self, source: str | Reference, tags: list[str]) -> str:
        """Point more tags of the same repository at the source's manifest; no blob moves."""
        ref = self._ref(source)
        registry = self.registry(ref.registry)
        payload, media_type, digest = await registry.get_manifest(ref.repository, ref.reference)
        for tag in tags:
            target = ref.with_reference(tag) if "/" not in tag else self._ref(tag)
            if (target.registry, target.repository) != (ref.registry, ref.repository):
                raise ClientError(f"{tag}: tag names a tag in the same repository; use copy for another one")
            await registry.put_manifest(ref.repository, target.reference, payload, media_type)
        return digest

    async def delete(self, target: str | Reference) -> str:
        """Untag (a tag) or delete a manifest (a digest); returns what was removed."""
        ref = self._ref(target)
        registry = self.registry(ref.registry)
        await registry.delete_manifest(ref.repository, ref.reference)
        return ref.reference

    async def list(self, target: str) -> list[str]:
        """Repositories of a registry (`HOST`), or tags of a repository (`HOST/REPO`), sorted."""
        if "/" not in target.strip("/"):
            return sorted(await self.registry(target).list_repositories())
        ref = self._ref(target)
        if ref.tag or ref.digest:
            raise ClientError(f"{target}: name a repository, not an image")
        return sorted(await self.registry(ref.registry).list_tags(ref.repository))

    async def inspect(self, where: str | Location, *, platform: str | None = None) -> dict[str, Any]:
        """Digest, media type, platforms of an index; config, layers, sizes and annotations of an image."""
        src = self.source(location(where))
        payload, media_type, digest = await src.resolve()
        info: dict[str, Any] = {"name": src.label, "digest": digest, "mediaType": media_type, "size": len(payload)}
        manifest = manifest_of(payload, media_type, digest, src.label)
        info["annotations"] = manifest.annotations
        if manifest.artifact_type:
            info["artifactType"] = manifest.artifact_type
        if manifest.is_index:
            info["platforms"] = [
                {
                    "platform": str(Platform.from_descriptor(c.platform) or ""),
                    "digest": str(c.digest),
                    "mediaType": c.media_type,
                    "size": c.size,
                }
                for c in manifest.children
            ]
            if platform is None:
                return info
            child = select_platform(manifest, Platform.parse(platform))
            payload, child_type = await src.manifest(str(child.digest))
            manifest = manifest_of(payload, child_type, str(child.digest), src.label)
            info["image"] = str(child.digest)
        else:
            info["platforms"] = []
        layers = manifest.layers
        info["layers"] = [{"digest": str(d.digest), "size": d.size, "mediaType": d.media_type} for d in layers]
        config_descriptor = manifest.config
        info["totalSize"] = sum(d.size for d in layers) + (config_descriptor.size if config_descriptor else 0)
        info["config"] = {
            "digest": str(config_descriptor.digest) if config_descriptor else None,
            "mediaType": config_descriptor.media_type if config_descriptor else None,
        }
        if config_descriptor and config_descriptor.media_type != mt.OCI_EMPTY and config_descriptor.size < 4 << 20:
            config = await self.config_blob(src, config_descriptor)
            if isinstance(config, dict):
                settings = config.get("config") or {}
                info["config"].update(
                    {
                        "os": config.get("os"),
                        "architecture": config.get("architecture"),
                        "variant": config.get("variant"),
                        "created": config.get("created"),
                        "env": settings.get("Env"),
                        "cmd": settings.get("Cmd"),
                        "entrypoint": settings.get("Entrypoint"),
                        "labels": settings.get("Labels"),
                    }
                )
        return info

    async def image(self, where: str | Location, *, platform: str | None = None) -> Image:
        """One image: the manifest `where` names or, for an index, its image for `platform` (or
        this machine's), with its config read and verified."""
        src = self.source(location(where))
        payload, media_type, digest = await src.resolve()
        if media_type in mt.INDEXES:
            try:
                wanted = Platform.parse(platform) if platform else host_platform()
            except ValueError as err:
                raise ClientError(str(err)) from None
            child = select_platform(manifest_of(payload, media_type, digest, src.label), wanted)
            digest = str(child.digest)
            payload, media_type = await src.manifest(digest)
        manifest = manifest_of(payload, media_type, digest, src.label)
        if manifest.config is None:
            raise ClientError(f"{src.label}: the manifest has no config")
        return Image(src, digest, payload, manifest, await self._read_small(src, manifest.config))

    async def config(self, where: str | Location, *, platform: str | None = None) -> bytes:
        """The image config exactly as stored (verified); for an index, that of `platform` or this machine's."""
        return (await self.image(where, platform=platform)).config

    async def config_blob(self, src: Source, descriptor: Descriptor) -> Any:
        try:
            return json.loads(await self._read_small(src, descriptor))
        except ValueError:
            return None

    async def _read_small(self, src: Source, blob: Descriptor, limit: int = 4 << 20) -> bytes:
        """A small blob (a config) in memory, checked against its digest."""
        data = bytearray()
        async with contextlib.aclosing(src.opener(blob)(0)) as chunks:
            async for piece in chunks:
                data += piece
                if len(data) > limit:
                    raise ClientError(f"{src.label}: blob {blob.digest} is larger than {limit} bytes")
        if Digest.of(bytes(data), blob.digest.algorithm) != blob.digest:
            raise IntegrityError(
                f"{src.label}: blob {blob.digest} has other content (a corrupt store or a lying server)"
            )
        return bytes(data)

    # --- credentials ------------------------------------------------------------------------------------------

    async def login(self, host: str, username: str, password: str) -> str:
        """Check the credentials against the registry, then store them; returns where."""
        name = parse_registry(host)
        credentials = Credentials(username, password)
        api = "registry-1.docker.io" if name == "docker.io" else name
        async with RegistryClient(api, credentials, self.options) as registry:
            await registry.check_login()
        return self.credentials.store(name, credentials)

    def logout(self, host: str) -> bool:
        return self.credentials.erase(parse_registry(host))
