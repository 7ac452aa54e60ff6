"""Upload sessions a push left unfinished, remembered so that the next push continues them.

One small JSON file per (registry, repository, digest) under `~/.cache/cargohold/uploads`
(`$XDG_CACHE_HOME` honoured), mode 0600, holding the session's URL. A push that finds one asks
the registry for the session's offset and sends only the rest; sessions older than a day (the
registries' usual expiry) are ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

MAX_AGE = 24 * 3600


def default_directory() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cargohold" / "uploads"


class UploadSessions:
    def __init__(self, directory: Path, max_age: float = MAX_AGE) -> None:
        self.directory = directory
        self.max_age = max_age

    def _path(self, host: str, repo: str, digest: str) -> Path:
        return self.directory / hashlib.sha256(f"{host}/{repo}@{digest}".encode()).hexdigest()[:32]

    def get(self, host: str, repo: str, digest: str) -> str | None:
        path = self._path(host, repo, digest)
        try:
            if time.time() - path.stat().st_mtime > self.max_age:
                path.unlink()
                return None
            location = json.loads(path.read_text()).get("location")
        except (OSError, ValueError, AttributeError):
            return None
        return location if isinstance(location, str) else None

    def put(self, host: str, repo: str, digest: str, location: str) -> None:
        with contextlib.suppress(OSError):  # remembering is a convenience; a read-only home must not fail a push
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self._path(host, repo, digest)
            temp = path.with_suffix(".tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"location": location, "repository": repo, "digest": digest}, out)
            os.replace(temp, path)

    def drop(self, host: str, repo: str, digest: str) -> None:
        with contextlib.suppress(OSError):
            self._path(host, repo, digest).unlink()
