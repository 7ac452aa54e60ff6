"""The database down or slow: every request that needs it is answered 503 UNAVAILABLE with
Retry-After within `database_timeout` (never a 500, never a hang), nothing half-done is
visible, what needs no database keeps working, and the registry recovers by itself once the
database is back. PostgreSQL is a server of the test's own, stopped and restarted with pg_ctl;
SQLite's "database is locked" is the same answer."""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from cargohold.storage.postgres import WRITE_LOCK
from tests.support.oci import make_image, push_image, sha256, with_query
from tests.support.postgres import PostgresServer
from tests.support.servers import Cargohold

TIMEOUT = 2.0  # the registries' database_timeout here
# A 503 must come within the timeout plus the pool's last backoff step and the machine's noise.
ANSWER_WITHIN = TIMEOUT + 6.0
PASSWORD = "pg-secret-7Hq2"  # in the database URL; the test server trusts loopback, so any works


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server this test may stop and start (the session's one serves the others)."""
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-pg-faults-"))
    server = PostgresServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def unavailable(what: str, send: Callable[[], httpx.Response], head: bool = False) -> httpx.Response:
    """Send a request that needs the database; it must be a prompt, well-formed 503."""
    started = time.monotonic()
    response = send()
    took = time.monotonic() - started
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text[:300]}"
    assert took < ANSWER_WITHIN, f"{what}: the 503 took {took:.1f} s (database_timeout {TIMEOUT} s)"
    retry = response.headers.get("retry-after", "")
    assert retry.isdigit() and int(retry) > 0, f"{what}: Retry-After is {retry!r}"
    if not head:
        error = response.json()["errors"][0]
        assert error["code"] == "UNAVAILABLE", f"{what}: {response.text[:300]}"
        assert "database" in error["message"], f"{what}: {error['message']}"
    return response


def recovered(send: Callable[[], httpx.Response], within: float = 30.0) -> httpx.Response:
    """The first answer that is no 503, once the database is back."""
    deadline = time.monotonic() + within
    while True:
        response = send()
        if response.status_code != 503:
            return response
        assert time.monotonic() < deadline, f"still 503 {within:.0f} s after the database came back: {response.text}"
        time.sleep(0.2)


def test_postgresql_stopped_mid_push_answers_503_then_the_push_completes(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = own_postgres.create_database().replace("postgres@", f"postgres:{PASSWORD}@")
    env = {"CARGOHOLD_DATABASE": url, "CARGOHOLD_DATABASE_TIMEOUT": f"{TIMEOUT:g}s"}
    server = Cargohold(tmp_path / "registry", extra_env=env, auth=True).start()
    try:
        image = make_image(layer_count=2, layer_size=512 * 1024)
        layer = image.layers[0]
        half = len(layer) // 2
        octets = {"content-type": "application/octet-stream"}
        with server.client(auth=("admin", server.admin_password())) as c:
            scope = {"service": "cargohold", "scope": "repository:team/app:pull,push"}
            token = c.get("/token", params=scope).json()["token"]
            bearer = {"authorization": f"Bearer {token}"}
            assert httpx.get(f"{server.url}/v2/", headers=bearer).status_code == 200  # the token is known
            begun = c.post("/v2/team/app/blobs/uploads/")
            assert begun.status_code == 202, begun.text
            first = c.patch(
                begun.headers["location"], content=layer[:half], headers={**octets, "content-range": f"0-{half - 1}"}
            )
            assert first.status_code == 202, first.text
            location = first.headers["location"]
            rest = {**octets, "content-range": f"{half}-{len(layer) - 1}"}

            port = own_postgres.port
            own_postgres.stop()

            unavailable("PATCH of the upload", lambda: c.patch(location, content=layer[half:], headers=rest))
            unavailable("PUT finishing the upload", lambda: c.put(with_query(location, digest=sha256(layer))))
            unavailable(
                "manifest PUT",
                lambda: c.put(
                    "/v2/team/app/manifests/v1", content=image.manifest, headers={"content-type": image.media_type}
                ),
            )
            unavailable("manifest GET", lambda: c.get("/v2/team/app/manifests/v1"))
            unavailable("blob HEAD", lambda: c.head(f"/v2/team/app/blobs/{sha256(layer)}"), head=True)
            unavailable("token request", lambda: c.get("/token", params=scope))
            unavailable("management API", lambda: c.get("/api/v1/users"))
            # A bearer token already verified needs no database: /v2/ still answers.
            assert httpx.get(f"{server.url}/v2/", headers=bearer).status_code == 200

            own_postgres.start(port=port)

            status = recovered(lambda: c.get(location))
            assert status.status_code == 204, status.text
            assert status.headers["range"] == f"0-{half - 1}", "the refused PATCH kept bytes"
            blob = c.head(f"/v2/team/app/blobs/{sha256(layer)}")
            assert blob.status_code == 404, "the refused PUT left a visible blob"
            # The very requests that were refused now succeed, as a client's retry would send them.
            second = c.patch(location, content=layer[half:], headers=rest)
            assert second.status_code == 202, second.text
            done = c.put(with_query(second.headers["location"], digest=sha256(layer)))
            assert done.status_code == 201, done.text
            push_image(c, "team/app", image, "v1")
            assert c.get("/v2/team/app/manifests/v1").content == image.manifest
            for content in [image.config, *image.layers]:
                assert c.get(f"/v2/team/app/blobs/{sha256(content)}").content == content
            fresh = c.get("/token", params=scope)
            assert fresh.status_code == 200, fresh.text
    finally:
        server.stop()
    log = server.log_text()
    assert PASSWORD not in log, "the database password reached the log"
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    assert not re.search(r'" 500 ', log), "a request was answered 500"
    assert "the database is unavailable" in log and "the database answers again" in log, log[-3000:]


def test_a_slow_postgresql_answers_503_within_the_timeout(postgres: PostgresServer, tmp_path: Path) -> None:
    """Slowness made deterministic with locks: the write lock every write transaction takes, held
    by another session; then a table lock that blocks reads."""
    url = postgres.create_database()
    env = {"CARGOHOLD_DATABASE": url, "CARGOHOLD_DATABASE_TIMEOUT": f"{TIMEOUT:g}s"}
    server = Cargohold(tmp_path / "registry", extra_env=env).start()
    try:
        image = make_image()
        other = make_image()
        with server.client() as c, psycopg.connect(url, autocommit=True) as holder:
            push_image(c, "team/app", image, "v1")

            def put_other() -> httpx.Response:
                return c.put(
                    "/v2/team/app/manifests/v2", content=other.manifest, headers={"content-type": other.media_type}
                )

            for blob in [other.config, *other.layers]:
                started = c.post("/v2/team/app/blobs/uploads/")
                assert (
                    c.put(with_query(started.headers["location"], digest=sha256(blob)), content=blob).status_code == 201
                )
            holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            started = time.monotonic()
            unavailable("manifest PUT behind a held write lock", put_other)
            assert time.monotonic() - started >= TIMEOUT * 0.9, "answered before the timeout: not the lock wait"
            assert c.get("/v2/team/app/manifests/v1").status_code == 200, "reads need no write lock"
            holder.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
            with holder.transaction():
                holder.execute("LOCK TABLE manifest IN ACCESS EXCLUSIVE MODE")
                unavailable("manifest GET behind a table lock", lambda: c.get("/v2/team/app/manifests/v1"))
            assert c.get("/v2/team/app/tags/list").json()["tags"] == ["v1"], "the refused PUT stored a tag"
            assert put_other().status_code == 201
            assert c.get("/v2/team/app/manifests/v2").content == other.manifest
    finally:
        server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]


def test_sqlite_locked_answers_503_and_the_retry_succeeds(tmp_path: Path) -> None:
    env = {"CARGOHOLD_DATABASE_TIMEOUT": "1s"}
    server = Cargohold(tmp_path / "registry", extra_env=env).start()
    try:
        image = make_image()
        with server.client() as c:
            for blob in [image.config, *image.layers]:
                started = c.post("/v2/team/app/blobs/uploads/")
                assert (
                    c.put(with_query(started.headers["location"], digest=sha256(blob)), content=blob).status_code == 201
                )

            def put() -> httpx.Response:
                return c.put(
                    "/v2/team/app/manifests/v1", content=image.manifest, headers={"content-type": image.media_type}
                )

            holder = sqlite3.connect(server.data / "metadata.sqlite3", isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")  # another writer that keeps the write lock
                unavailable("manifest PUT while SQLite is locked", put)
                assert c.get("/v2/team/app/manifests/v1").status_code == 404, "reads go on (WAL)"
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert put().status_code == 201
            assert c.get("/v2/team/app/manifests/v1").content == image.manifest
    finally:
        server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
