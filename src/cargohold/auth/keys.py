"""Token signing keys: generated on first start, identified by `kid`, rotated without downtime.

Keys live in the database (table `signing_key`), sealed under the secret file, so every process
and every replica sharing the database signs and verifies with the same keys. One row is active:
it signs. Rotation makes a new key active and keeps the old ones for verification, so tokens
issued just before still work until they expire; `prune` then removes keys older than that.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..storage.records import BackendUnavailable
from ..storage.sql import Database
from .sealing import Sealer, SealingError

ALGORITHM = "ES256"
# How often a process looks for keys another one rotated in or pruned.
FOLLOW_SECONDS = 1.0

log = logging.getLogger("cargohold.auth")


def _kid(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b32encode(hashlib.sha256(der).digest()[:15]).decode().lower()


def _der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeyRing:
    def __init__(self, database: Database, secret: bytes, legacy_directory: Path | None = None) -> None:
        self.database = database
        self._sealer = Sealer(secret, "token signing keys")
        # Where cargohold before revision 0002 kept its keys as PEM files, to adopt them from.
        self._legacy = legacy_directory
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._created: dict[str, float] = {}
        self._active = ""
        self._checked = 0.0

    def ensure(self) -> KeyRing:
        """Load the keys, adopting an older data directory's key files or creating the first key."""
        adopted: list[Path] = []
        with self.database.transaction() as db:
            if db.execute("SELECT 1 FROM signing_key WHERE active = TRUE").fetchone() is None:
                adopted = self._adopt_files()
                if not adopted:
                    self._insert(ec.generate_private_key(ec.SECP256R1()), active=True)
        for path in adopted:  # committed: the plaintext copies go
            path.unlink(missing_ok=True)
        if adopted:
            log.warning("moved %d signing key(s) from %s into the database, sealed", len(adopted) - 1, self._legacy)
        return self.load()

    def _adopt_files(self) -> list[Path]:
        directory = self._legacy
        if directory is None or not (directory / "active").is_file():
            return []
        active = (directory / "active").read_text().strip()
        pems = sorted(directory.glob("*.pem"))
        for path in pems:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                self._insert(key, active=path.stem == active, created=path.stat().st_mtime)
        return [*pems, directory / "active"]

    def _insert(self, key: ec.EllipticCurvePrivateKey, active: bool, created: float | None = None) -> str:
        kid = _kid(key)
        with self.database.transaction() as db:
            if active:
                db.execute("UPDATE signing_key SET active = FALSE WHERE active = TRUE")
            db.execute(
                "INSERT INTO signing_key(kid, sealed, created, active) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kid) DO UPDATE SET active = excluded.active",
                (kid, self._sealer.seal(kid, _der(key)), created or time.time(), active),
            )
        return kid

    def load(self) -> KeyRing:
        """Read the key list; keys not yet held are opened, keys gone are dropped."""
        rows = self.database.executor.execute("SELECT kid, created, active FROM signing_key").fetchall()
        wanted = {kid for kid, _, _ in rows}
        keys = {kid: key for kid, key in self._keys.items() if kid in wanted}
        for kid in wanted - keys.keys():
            keys[kid] = self._open(kid)
        active = [kid for kid, _, is_active in rows if is_active]
        if len(active) != 1:
            raise RuntimeError(
                f"the database holds {len(active)} active signing keys, not 1: run `cargohold keys rotate`"
            )
        self._keys, self._active = keys, active[0]
        self._created = {kid: float(created) for kid, created, _ in rows}
        self._checked = time.monotonic()
        return self

    def _open(self, kid: str) -> ec.EllipticCurvePrivateKey:
        row = self.database.executor.execute("SELECT sealed FROM signing_key WHERE kid = ?", (kid,)).fetchone()
        try:
            der = self._sealer.open(kid, row[0]) if row else b""
        except SealingError:
            raise SealingError(
                f"the signing key {kid} in the database was sealed with another secret: every process "
                "sharing this database needs the same secret_file (CARGOHOLD_SECRET_FILE)"
            ) from None
        key = serialization.load_der_private_key(der, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def rotate(self) -> str:
        kid = self._insert(ec.generate_private_key(ec.SECP256R1()), active=True)
        self.load()
        return kid

    def prune(self, older_than: float) -> list[str]:
        """Remove inactive keys created more than `older_than` seconds ago."""
        with self.database.transaction() as db:
            removed = [
                kid
                for (kid,) in db.execute(
                    "DELETE FROM signing_key WHERE active = FALSE AND created < ? RETURNING kid",
                    (time.time() - older_than,),
                )
            ]
        self.load()
        return removed

    def follow(self) -> None:
        """Reload, at most once a second, to see keys another process rotated in or pruned.
        While the database is unavailable the keys held stay in use (tokens already issued keep
        working), and one caller a second tries again."""
        if time.monotonic() - self._checked >= FOLLOW_SECONDS:
            self._checked = time.monotonic()
            with contextlib.suppress(BackendUnavailable):
                self.load()

    def holds(self, kid: str) -> bool:
        return kid in self._keys

    def kids(self) -> list[tuple[str, float, bool]]:
        """(kid, created, active) for each key, newest first."""
        rows = [(kid, self._created[kid], kid == self._active) for kid in self._keys]
        return sorted(rows, key=lambda row: -row[1])

    def signing_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        self.follow()  # another process may have rotated
        return self._active, self._keys[self._active]

    def verifying_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        self.follow()  # a key rotated in by another process since this one loaded
        key = self._keys.get(kid)
        return key.public_key() if key is not None else None
