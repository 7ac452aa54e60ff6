"""Schema migrations: a new database is made current, one from before migrations upgrades in place
with `cargohold db upgrade`, and `serve` refuses a database at another revision in one line."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from cargohold.storage.metadata import SQLiteMetadataStore
from cargohold.storage.schema import HEAD, MIGRATIONS, SchemaError, current_revision, sqlalchemy_url, upgrade_url
from tests.support.oci import make_image, push_image
from tests.support.postgres import PostgresServer
from tests.support.servers import Cargohold

# Made by cargohold at fd5fa69, the last commit before migrations: repository legacy/app with
# tags v1 and v2, and a robot `legacy-ci`.
BEFORE_MIGRATIONS = Path(__file__).parent / "fixtures" / "data-before-migrations.tar.gz"


def cargohold(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "CARGOHOLD_AUTH": "off"},
    )


def unpack_old_store(into: Path) -> Path:
    into.mkdir(parents=True)
    with tarfile.open(BEFORE_MIGRATIONS) as archive:
        archive.extractall(into, filter="data")
    return into


def versions(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        rows = [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]
    db.close()
    return rows


def test_head_is_alembics_only_head() -> None:
    script = ScriptDirectory(str(MIGRATIONS))
    assert script.get_heads() == [HEAD], "one line of revisions, ending at schema.HEAD"


def test_a_new_data_directory_starts_at_the_newest_revision(fresh_cargohold: Cargohold) -> None:
    assert versions(fresh_cargohold.data / "metadata.sqlite3") == [HEAD]
    shown = cargohold("db", "current", "--data", str(fresh_cargohold.data))
    assert shown.returncode == 0 and f"revision {HEAD}" in shown.stdout


def test_a_store_from_before_migrations_upgrades_in_place(tmp_path: Path) -> None:
    data = unpack_old_store(tmp_path / "registry" / "data")
    database = data / "metadata.sqlite3"

    refused = cargohold("serve", "--data", str(data), "--listen", "127.0.0.1:0")
    assert refused.returncode == 2
    complaint = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(complaint) == 1 and f"cargohold db upgrade --data {data}" in complaint[0], refused.stderr
    with pytest.raises(SchemaError, match="before migrations"):
        SQLiteMetadataStore(database)
    behind = cargohold("db", "current", "--data", str(data))
    assert behind.returncode == 1 and "before migrations" in behind.stdout

    upgraded = cargohold("db", "upgrade", "--data", str(data))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from the schema before migrations to {HEAD}" in upgraded.stdout
    assert versions(database) == [HEAD]
    again = cargohold("db", "upgrade", "--data", str(data))
    assert again.returncode == 0 and "already at revision" in again.stdout

    server = Cargohold(tmp_path / "registry").start()
    try:
        with server.client() as c:
            assert c.get("/v2/legacy/app/tags/list").json()["tags"] == ["v1", "v2"]
            for tag in ("v1", "v2"):
                manifest = c.get(f"/v2/legacy/app/manifests/{tag}")
                assert manifest.status_code == 200
                document = manifest.json()
                for blob in [document["config"], *document["layers"]]:
                    content = c.get(f"/v2/legacy/app/blobs/{blob['digest']}").content
                    assert "sha256:" + hashlib.sha256(content).hexdigest() == blob["digest"]
            assert push_image(c, "legacy/app", make_image(), "v3").status_code == 201
        robots = cargohold("robot", "ls", "--json", "--data", str(data))
        assert [r["name"] for r in json.loads(robots.stdout)] == ["legacy-ci"]
    finally:
        server.stop()
    scrubbed = cargohold("scrub", "--data", str(data))
    assert scrubbed.returncode == 0, scrubbed.stdout + scrubbed.stderr


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    SQLiteMetadataStore(data / "metadata.sqlite3").close()
    with sqlite3.connect(data / "metadata.sqlite3") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.close()
    refused = cargohold("serve", "--data", str(data), "--listen", "127.0.0.1:0")
    assert refused.returncode == 2
    assert "revision 9999, newer than this cargohold knows" in refused.stderr


def _open(database: str) -> bool:
    SQLiteMetadataStore(Path(database)).close()
    return True


def test_processes_opening_a_new_database_at_once_make_one_schema(tmp_path: Path) -> None:
    database = tmp_path / "data" / "metadata.sqlite3"
    with ProcessPoolExecutor(max_workers=6) as pool:
        assert all(pool.map(_open, [str(database)] * 6))
    assert versions(database) == [HEAD]


def test_postgresql_gets_the_same_tables(postgres: PostgresServer, tmp_path: Path) -> None:
    import psycopg

    url = postgres.create_database()
    assert current_revision(url) is None
    # Replicas starting at once take turns (processes: Alembic's context is one per process).
    with ProcessPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(upgrade_url, [url] * 3))
    assert None in [before for before, _ in results]
    assert {after for _, after in results} == {HEAD}
    with psycopg.connect(url) as db:
        assert [row[0] for row in db.execute("SELECT version_num FROM alembic_version")] == [HEAD]
        tables = {row[0] for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        SQLiteMetadataStore(tmp_path / "metadata.sqlite3").close()
        with sqlite3.connect(tmp_path / "metadata.sqlite3") as lite:
            sqlite_tables = {row[0] for row in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        lite.close()
        assert tables == sqlite_tables
        # The constraints came along: sizes are 64-bit, a reference kind is checked.
        db.execute("INSERT INTO blob VALUES ('sha256:x', %s, 0, 0)", (1 << 40,))
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute("INSERT INTO manifest_ref VALUES ('r', 'm', 'c', 'nonsense')")
    assert sqlalchemy_url(url).startswith("postgresql+psycopg://")
