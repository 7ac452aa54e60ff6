"""Token signing keys: generated on first start, identified by `kid`, rotated without downtime.

Keys live as PEM files in `<data>/keys/`, one per kid, with `active` naming the one that signs.
Rotation makes a new key active and keeps the old ones for verification, so tokens issued
just before still work until they expire; `prune` then removes keys older than that.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b32encode(hashlib.sha256(der).digest()[:15]).decode().lower()


class KeyRing:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._active = ""
        self._active_mtime = 0.0
        self._dir_mtime = 0
        self._checked = 0.0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def ensure(self) -> KeyRing:
        """Load the keys, creating the first one if there is none."""
        with self._locked():
            if not (self.directory / "active").exists():
                self._write_new_key()
        return self.load()

    def load(self) -> KeyRing:
        keys = {}
        for path in self.directory.glob("*.pem"):
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                keys[path.stem] = key
        active_file = self.directory / "active"
        self._active = active_file.read_text().strip()
        self._active_mtime = active_file.stat().st_mtime
        self._keys = keys
        self._dir_mtime = self.directory.stat().st_mtime_ns
        if self._active not in keys:
            raise RuntimeError(f"the active signing key {self._active!r} is missing from {self.directory}")
        return self

    def _write_new_key(self) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        kid = _kid(key)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = self.directory / f"{kid}.pem"
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.replace(path.with_suffix(".tmp"), path)
        active = self.directory / "active.tmp"
        active.write_text(kid + "\n")
        os.replace(active, self.directory / "active")
        return kid

    def rotate(self) -> str:
        with self._locked():
            kid = self._write_new_key()
        self.load()
        return kid

    def prune(self, older_than: float) -> list[str]:
        """Remove inactive keys created more than `older_than` seconds ago."""
        removed = []
        with self._locked():
            active = (self.directory / "active").read_text().strip()
            for path in self.directory.glob("*.pem"):
                if path.stem != active and path.stat().st_mtime < time.time() - older_than:
                    path.unlink()
                    removed.append(path.stem)
        self.load()
        return removed

    def follow(self) -> None:
        """Reload, at most once a second, when another process added or removed a key."""
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        with contextlib.suppress(OSError):
            if self.directory.stat().st_mtime_ns != self._dir_mtime:
                self.load()

    def holds(self, kid: str) -> bool:
        return kid in self._keys

    def kids(self) -> list[tuple[str, float, bool]]:
        """(kid, created, active) for each key, newest first."""
        rows = [(p.stem, p.stat().st_mtime, p.stem == self._active) for p in self.directory.glob("*.pem")]
        return sorted(rows, key=lambda row: -row[1])

    def signing_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        # Another process may have rotated: follow the `active` file when it changes.
        with contextlib.suppress(OSError):
            if (self.directory / "active").stat().st_mtime != self._active_mtime:
                self.load()
        return self._active, self._keys[self._active]

    def verifying_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        key = self._keys.get(kid)
        if key is None and kid.isalnum() and (self.directory / f"{kid}.pem").exists():
            self.load()  # a key rotated in by another process since this one loaded
            key = self._keys.get(kid)
        return key.public_key() if key is not None else None
