"""OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), as umoci and skopeo write them.

    >>> layout = OCILayout(Path("img"))                       # doctest: +SKIP
    >>> descriptor = layout.resolve("v1")                     # the index entry tagged v1
    >>> layout.read_blob(descriptor["digest"])                # the manifest's bytes, verified

Blobs are written to a temporary file and renamed into place only once their digest checks;
`index.json` is replaced atomically, so a failed pull never leaves half an image.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..oci.digest import Digest
from ..oci.errors import RegistryError
from .errors import ClientError, IntegrityError, NotFoundError

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = '{"imageLayoutVersion": "1.0.0"}'


def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except RegistryError as err:
        raise ClientError(err.message) from None


class OCILayout:
    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if create:
            (path / "blobs").mkdir(parents=True, exist_ok=True)
            if not (path / "oci-layout").exists():
                (path / "oci-layout").write_text(LAYOUT_FILE)
            if not (path / "index.json").exists():
                self._write_index({"schemaVersion": 2, "manifests": []})
        elif not (path / "oci-layout").is_file() or not (path / "index.json").is_file():
            raise ClientError(f"{path} is not an OCI image layout (no oci-layout or index.json)")

    def index(self) -> dict[str, Any]:
        try:
            document = json.loads((self.path / "index.json").read_text())
        except (OSError, ValueError) as err:
            raise ClientError(f"{self.path}/index.json is unreadable: {err}") from None
        if not isinstance(document, dict) or not isinstance(document.get("manifests", []), list):
            raise ClientError(f"{self.path}/index.json is not an OCI index")
        return document

    def resolve(self, reference: str | None) -> dict[str, Any]:
        """The index entry for a tag (ref.name annotation) or digest; None means the only entry."""
        entries = self.index().get("manifests", [])
        if reference is None:
            if len(entries) == 1:
                return entries[0]
            tags = sorted(e.get("annotations", {}).get(REF_NAME, e.get("digest")) for e in entries)
            raise ClientError(f"{self.path} holds {len(entries)} images; name one of: {', '.join(tags) or 'none'}")
        for entry in entries:
            if reference in (entry.get("digest"), (entry.get("annotations") or {}).get(REF_NAME)):
                return entry
        raise NotFoundError(f"{self.path} has no image {reference!r}")

    def blob_path(self, digest: str) -> Path:
        parsed = _digest(digest)
        return self.path / "blobs" / parsed.algorithm / parsed.encoded

    def has_blob(self, digest: str, size: int) -> bool:
        try:
            return self.blob_path(digest).stat().st_size == size
        except FileNotFoundError:
            return False

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"{self.path} lacks blob {digest}") from None

    def read_blob(self, digest: str) -> bytes:
        """A small blob (manifest, config) in memory, verified."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{self.path} lacks blob {digest}") from None
        if str(Digest.of(data, _digest(digest).algorithm)) != digest:
            raise IntegrityError(f"{self.path}: blob {digest} is corrupt (its bytes have another digest)")
        return data

    def prepare_blob_dir(self, digest: str) -> Path:
        path = self.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_blob(self, data: bytes) -> str:
        digest = str(Digest.of(data))
        path = self.prepare_blob_dir(digest)
        if not path.exists():
            _atomic_write(path, data)
        return digest

    def tag(self, descriptor: dict[str, Any], tag: str | None) -> None:
        """Add an index entry for a manifest, moving the tag if another entry had it."""
        document = self.index()
        entries = [
            e
            for e in document.get("manifests", [])
            if not (tag and (e.get("annotations") or {}).get(REF_NAME) == tag)
            and not (not tag and e.get("digest") == descriptor["digest"] and not e.get("annotations"))
        ]
        entry = dict(descriptor)
        if tag:
            entry["annotations"] = {**(entry.get("annotations") or {}), REF_NAME: tag}
        entries.append(entry)
        document["manifests"] = entries
        document.setdefault("schemaVersion", 2)
        self._write_index(document)

    def _write_index(self, document: dict[str, Any]) -> None:
        _atomic_write(self.path / "index.json", json.dumps(document, indent=2).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 is for secrets; a layout is shared like any files
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
