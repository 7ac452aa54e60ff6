"""Token signing keys in the database, on every database backend: every handle (process, replica)
sees the same keys, rotation reaches the others, the rows hold no readable private key, a wrong
secret is one clear sentence, and an older data directory's key files are adopted, not replaced."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cargohold.auth import keys as keys_module
from cargohold.auth.keys import KeyRing
from cargohold.auth.sealing import SealingError, load_secret
from cargohold.storage.backends import open_database
from cargohold.storage.sql import Database


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    return load_secret(tmp_path / "secret.key")


@pytest.fixture
def other_handle(database_target: str | Path) -> Iterator[Database]:
    """A second handle on the same database, as another replica holds."""
    handle = open_database(database_target)
    yield handle
    handle.close()


def test_every_handle_signs_and_verifies_with_the_same_keys(
    database: Database, other_handle: Database, secret: bytes
) -> None:
    first = KeyRing(database, secret).ensure()
    second = KeyRing(other_handle, secret).ensure()  # a second replica starting: no new key
    kid, private = first.signing_key()
    assert second.signing_key()[0] == kid
    assert [row[0] for row in second.kids()] == [kid]
    public = second.verifying_key(kid)
    assert public is not None
    assert public.public_numbers() == private.public_key().public_numbers()


def test_a_rotation_on_one_replica_reaches_the_other(
    database: Database, other_handle: Database, secret: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module, "FOLLOW_SECONDS", 0.0)
    first = KeyRing(database, secret).ensure()
    second = KeyRing(other_handle, secret).ensure()
    old = first.signing_key()[0]
    new = first.rotate()
    assert second.signing_key()[0] == new, "the other replica signs with the new key"
    assert second.verifying_key(old) is not None, "tokens signed just before still verify"
    assert first.prune(older_than=-1.0) == [old]
    assert second.verifying_key(old) is None, "a pruned key is gone everywhere"


def test_the_database_holds_no_readable_private_key(database: Database, secret: bytes) -> None:
    ring = KeyRing(database, secret).ensure()
    kid, private = ring.signing_key()
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (sealed,) = database.executor.execute("SELECT sealed FROM signing_key WHERE kid = ?", (kid,)).fetchone()
    raw = base64.b64decode(sealed)
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    assert der not in raw and scalar not in raw and base64.b64encode(der).decode() not in sealed


def test_another_secret_is_refused_in_one_sentence(database: Database, secret: bytes, tmp_path: Path) -> None:
    KeyRing(database, secret).ensure()
    stranger = load_secret(tmp_path / "another.key")
    with pytest.raises(SealingError) as refused:
        KeyRing(database, stranger).ensure()
    message = str(refused.value)
    assert "sealed with another secret" in message and "secret_file" in message
    assert "\n" not in message


def test_a_sealed_key_moved_to_another_row_does_not_open(database: Database, secret: bytes) -> None:
    ring = KeyRing(database, secret).ensure()
    ring.rotate()
    (_, sealed_a), (b, _) = database.executor.execute("SELECT kid, sealed FROM signing_key ORDER BY kid").fetchall()
    with database.transaction() as db:
        db.execute("UPDATE signing_key SET sealed = ? WHERE kid = ?", (sealed_a, b))
    with pytest.raises(SealingError):
        KeyRing(database, secret).ensure()


def test_key_files_of_an_older_data_directory_are_adopted(database: Database, secret: bytes, tmp_path: Path) -> None:
    legacy = tmp_path / "keys"
    legacy.mkdir()
    kids = []
    for _ in range(2):
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        kid = keys_module._kid(key)
        (legacy / f"{kid}.pem").write_bytes(pem)
        kids.append(kid)
    (legacy / "active").write_text(kids[1] + "\n")

    ring = KeyRing(database, secret, legacy).ensure()
    assert ring.signing_key()[0] == kids[1], "the active key stays active: tokens issued before still verify"
    assert all(ring.holds(kid) for kid in kids)
    assert sorted(p.name for p in legacy.iterdir()) == [], "no plaintext key is left on disk"
    again = KeyRing(database, secret, legacy).ensure()
    assert sorted(row[0] for row in again.kids()) == sorted(kids)
