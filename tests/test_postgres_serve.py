"""The registry on PostgreSQL: `serve` with a postgresql:// database keeps its metadata and its
access control there (the blobs stay under the data directory), and the maintenance commands
work on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from cargohold.storage.schema import HEAD
from tests.support.oci import make_image, push_image, sha256
from tests.support.postgres import PostgresServer
from tests.support.servers import Cargohold


def cargohold(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )


def test_serve_push_pull_and_maintain_on_postgresql(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.create_database()
    env = {"CARGOHOLD_DATABASE": url}
    server = Cargohold(tmp_path / "registry", extra_env=env, auth=True).start()
    try:
        image = make_image()
        with server.client(auth=("admin", server.admin_password())) as c:
            assert push_image(c, "team/app", image, "v1").status_code == 201
            assert c.get("/v2/team/app/manifests/v1").content == image.manifest
            for blob in [image.config, *image.layers]:
                assert c.get(f"/v2/team/app/blobs/{sha256(blob)}").content == blob
            robot = c.post("/api/v1/robots", json={"name": "ci", "scopes": ["repository:team/*:pull"]})
            assert robot.status_code == 201, robot.text
            secret = robot.json()["secret"]
        # A name PostgreSQL text cannot hold (NUL) is a failed login like any other, never a 500.
        with server.client(auth=("ad\0min", "whatever")) as hostile:
            assert hostile.get("/v2/").status_code == 401
        with server.client(auth=("ci", secret)) as ci:
            assert ci.get("/v2/team/app/tags/list").json()["tags"] == ["v1"]
            assert ci.delete("/v2/team/app/manifests/v1").status_code == 403
    finally:
        server.stop()
    assert not (server.data / "metadata.sqlite3").exists(), "the metadata went to PostgreSQL"
    with psycopg.connect(url) as db:
        assert db.execute("SELECT name FROM tag WHERE repo = 'team/app'").fetchall() == [("v1",)]
        assert db.execute("SELECT count(*) FROM principal").fetchone() == (2,)
        pushed = db.execute("SELECT count(*) FROM audit_event WHERE action = 'manifest.push'").fetchone()
        assert pushed == (1,)
    data = ["--data", str(server.data)]
    current = cargohold(env, "db", "current", *data)
    assert current.returncode == 0 and f"revision {HEAD}" in current.stdout, current.stdout + current.stderr
    usage = cargohold(env, "usage", "--json", *data)
    assert usage.returncode == 0, usage.stderr
    assert {row["name"] for row in json.loads(usage.stdout)} == {"team/app"}
    collected = cargohold(env, "gc", "--grace", "0s", "--json", *data)
    assert collected.returncode == 0, collected.stderr
    shown = cargohold(env, "robot", "ls", "--json", *data)
    assert [r["name"] for r in json.loads(shown.stdout)] == ["ci"]


def test_a_bad_database_setting_is_one_clear_line(tmp_path: Path) -> None:
    refused = cargohold(
        {"CARGOHOLD_DATABASE": "mysql://x"}, "serve", "--data", str(tmp_path), "--listen", "127.0.0.1:0"
    )
    assert refused.returncode != 0
    assert "database must be empty (SQLite under the data directory) or a postgresql:// URL" in refused.stderr
