"""`cargohold migrate`: a populated embedded-default registry (SQLite + the data directory's
blobs, access control on) moved to PostgreSQL + S3 (moto) serves the same images, tags,
referrers, catalog, credentials, tokens and audit trail; a rerun copies nothing; a target that
has served since is refused; the way back to SQLite + files works the same; a corrupt source
blob is named and stops the rows; every table of the schema is copied or knowingly dropped."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import psycopg

from cargohold.lifecycle.migrate import DROPPED, TABLES
from cargohold.storage.schema import upgrade
from tests.support.cli import CargoholdCLI
from tests.support.oci import (
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    canonical,
    descriptor,
    make_image,
    push_blob,
    push_image,
    sha256,
)
from tests.support.postgres import PostgresServer
from tests.support.s3 import S3Server
from tests.support.servers import Cargohold
from tests.support.waiting import wait_until

SERVICE = "cargohold"


def populate(c: httpx.Client) -> None:
    """Images, a Docker manifest, a multi-arch index and a referrer, in two repositories."""
    app_v1 = make_image(layer_size=300_000)
    push_image(c, "team/app", app_v1, "v1")
    push_image(c, "team/app", make_image(layer_count=3, media_type=DOCKER_MANIFEST), "v2")
    c.put("/v2/team/app/manifests/stable", content=app_v1.manifest, headers={"content-type": app_v1.media_type})
    children = [make_image(layer_size=2_000), make_image(layer_size=3_000)]
    for child in children:
        push_image(c, "team/multi", child)
    index = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(child.media_type, child.manifest, platform={"architecture": arch, "os": "linux"})
                for child, arch in zip(children, ("amd64", "arm64"), strict=True)
            ],
        }
    )
    assert c.put("/v2/team/multi/manifests/latest", content=index, headers={"content-type": OCI_INDEX}).is_success
    sbom = b'{"sbom": true}'
    push_blob(c, "team/app", sbom)
    push_blob(c, "team/app", b"{}")
    artifact = canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sbom",
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor("application/json", sbom)],
            "subject": descriptor(app_v1.media_type, app_v1.manifest),
        }
    )
    pushed = c.put(
        f"/v2/team/app/manifests/{sha256(artifact)}",
        content=artifact,
        headers={"content-type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert pushed.status_code == 201 and pushed.headers.get("oci-subject") == app_v1.digest


def contents(c: httpx.Client) -> dict[str, Any]:
    """Everything a client can read of the registry: catalog, tags, every manifest by tag and by
    digest (bytes and type), every blob they reference, and the referrers of each."""
    seen: dict[str, Any] = {"catalog": c.get("/v2/_catalog").json()}
    accept = {"accept": f"{OCI_INDEX},application/vnd.oci.image.manifest.v1+json,{DOCKER_MANIFEST}"}
    for repo in seen["catalog"]["repositories"]:
        tags = c.get(f"/v2/{repo}/tags/list").json()
        seen[f"{repo} tags"] = tags
        pending = [(repo, tag) for tag in tags["tags"]]
        while pending:
            name, reference = pending.pop()
            if f"{name}@{reference}" in seen:
                continue
            got = c.get(f"/v2/{name}/manifests/{reference}", headers=accept)
            assert got.status_code == 200, got.text
            digest = got.headers["docker-content-digest"]
            seen[f"{name}@{reference}"] = (got.headers["content-type"], digest, got.content)
            document = json.loads(got.content)
            for child in document.get("manifests", []):
                pending.append((name, child["digest"]))
            for blob in [document.get("config"), *document.get("layers", [])]:
                if blob:
                    seen[f"{name} blob {blob['digest']}"] = c.get(f"/v2/{name}/blobs/{blob['digest']}").content
            referrers = c.get(f"/v2/{name}/referrers/{digest}").json()
            seen[f"{name} referrers {digest}"] = referrers
            for referrer in referrers["manifests"]:
                pending.append((name, referrer["digest"]))
            pending.append((name, digest))
    return seen


def token(server: Cargohold, auth: tuple[str, str]) -> str:
    got = httpx.get(f"{server.url}/token", params={"service": SERVICE, "scope": "repository:team/app:pull"}, auth=auth)
    assert got.status_code == 200, got.text
    return str(got.json()["token"])


def migrate(cli: CargoholdCLI, *args: str | Path) -> dict[str, Any]:
    return cli.json("migrate", *args)  # type: ignore[no-any-return]


def test_a_populated_registry_moves_to_postgresql_and_s3_and_back(
    postgres: PostgresServer, s3: S3Server, tmp_path: Path
) -> None:
    source = Cargohold(tmp_path / "source", auth=True).start()
    try:
        admin = ("admin", source.admin_password())
        with source.client(auth=admin) as c:
            populate(c)
            robot = c.post("/api/v1/robots", json={"name": "ci", "scopes": ["repository:team/*:pull"]})
            assert robot.status_code == 201, robot.text
            robot_secret = robot.json()["secret"]
            user = c.post("/api/v1/users", json={"name": "alice", "password": "alice-secret-1", "groups": ["devs"]})
            assert user.status_code == 201, user.text
            assert c.post("/api/v1/policies", json={"subject": "group:devs", "scope": "team/*:pull"}).is_success
            old_key_token = token(source, admin)
            assert c.post("/api/v1/keys/rotate").is_success
            before = contents(c)
            audit_before = c.get("/api/v1/audit", params={"limit": "10000"}).json()
        new_key_token = token(source, admin)
        assert {"manifest.push", "robot.create", "user.create"} <= {event["action"] for event in audit_before}

        # While the server runs (once it leads its scheduled jobs), migrate refuses, in one line.
        cli = CargoholdCLI(tmp_path / "home", s3.environment())
        refused: list[str] = []

        def refuses() -> bool:
            done = cli.run("migrate", "--data", source.data, "--to-data", tmp_path / "throwaway", check=False)
            refused.append(done.stderr.strip())
            return done.returncode == 1 and "a cargohold server is running on the source" in done.stderr

        wait_until(refuses, "migrate to refuse a running source", timeout=20)
        assert len(refused[-1].splitlines()) == 1 and "stop it first" in refused[-1]
    finally:
        source.stop()

    url, bucket = postgres.create_database(), s3.create_bucket()
    to_cloud = ["--data", source.data, "--to-database", url, "--to-blob-store", f"s3://{bucket}/reg"]
    to_cloud += ["--to-s3-endpoint", s3.endpoint]
    planned = migrate(cli, *to_cloud, "--dry-run")
    assert planned["ok"] and planned["blobs_copied"] == planned["blobs"] > 10
    with psycopg.connect(url) as db:
        assert db.execute("SELECT count(*) FROM manifest").fetchone() == (0,), "a dry run copies nothing"
    done = migrate(cli, *to_cloud)
    assert done["ok"] and done["blobs_copied"] == done["blobs"] == planned["blobs"]
    assert done["bytes_copied"] == done["blob_bytes"] and done["rows_copied"]["audit_event"] == len(audit_before)
    assert done["rows_copied"]["signing_key"] == 2 and done["rows_copied"]["principal"] == 3
    assert sorted(done["dropped"]) == sorted(DROPPED)
    again = migrate(cli, *to_cloud)
    assert again["ok"] and again["blobs_copied"] == 0 and again["blobs_present"] == done["blobs"]
    assert set(again["rows_copied"].values()) == {0}, "a rerun copies nothing"
    assert again["rows_present"] == done["rows_copied"]

    cloud_env = {
        **s3.environment(),
        "CARGOHOLD_DATABASE": url,
        "CARGOHOLD_BLOB_STORE": f"s3://{bucket}/reg",
        "CARGOHOLD_SECRET_FILE": str(source.data / "secret.key"),
    }
    target = Cargohold(tmp_path / "cloud", extra_env=cloud_env, auth=True).start()
    try:
        with target.client(auth=admin) as c:
            assert contents(c) == before, "every image, tag and referrer reads back identical"
            audit_after = c.get("/api/v1/audit", params={"limit": "10000"}).json()
            # The ids went with the rows: a new user, policy and push get ids of their own.
            assert c.post("/api/v1/users", json={"name": "bob", "password": "bob-secret-12"}).status_code == 201
            assert c.post("/api/v1/policies", json={"subject": "user:bob", "scope": "x/*:pull"}).is_success
            push_image(c, "team/after", make_image(), "v1")
            after_push = contents(c)
        assert [e for e in audit_after if e in audit_before] == audit_before, "the old audit trail is there"
        assert not (target.data / "initial-admin-password").exists(), "no new admin: the old one came along"
        for credentials in [("ci", robot_secret), ("alice", "alice-secret-1"), admin]:
            with target.client(auth=credentials) as c:
                assert c.get("/v2/team/app/tags/list").status_code == 200, credentials[0]
        for bearer in (old_key_token, new_key_token):  # signed before the migration, by each key
            with target.client(headers={"authorization": f"Bearer {bearer}"}) as c:
                assert c.get("/v2/team/app/tags/list").json()["tags"] == ["stable", "v1", "v2"]
        with target.client(auth=("alice", "wrong")) as c:
            assert c.get("/v2/").status_code == 401
    finally:
        target.stop()

    # The target has served (and been written to) since: migrating into it again is refused.
    line = cli.fails("migrate", *to_cloud)
    assert "already holds registry data that is not the source's" in line, line

    # And back: PostgreSQL + S3 to SQLite + files, the source given by the usual settings.
    back_cli = CargoholdCLI(tmp_path / "home2", cloud_env)
    home = tmp_path / "back" / "data"
    back = migrate(back_cli, "--data", tmp_path / "cloud" / "data", "--to-data", home)
    assert back["ok"] and back["blobs_copied"] == back["blobs"] and back["rows_copied"]["principal"] == 4
    secret = {"CARGOHOLD_SECRET_FILE": str(source.data / "secret.key")}
    returned = Cargohold(tmp_path / "back", extra_env=secret, auth=True).start()
    try:
        with returned.client(auth=admin) as c:
            assert contents(c) == after_push
        with returned.client(auth=("bob", "bob-secret-12")) as c:
            assert c.get("/v2/").status_code == 200
    finally:
        returned.stop()


def test_a_corrupt_source_blob_is_named_and_no_row_is_copied(tmp_path: Path) -> None:
    source = Cargohold(tmp_path / "source").start()
    try:
        image = make_image(layer_size=50_000)
        with source.client() as c:
            push_image(c, "team/app", image, "v1")
    finally:
        source.stop()
    layer = sha256(image.layers[1])
    path = source.data / "blobs" / "sha256" / layer[7:9] / layer[7:]
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    cli = CargoholdCLI(tmp_path / "home")
    target = tmp_path / "target"
    done = cli.run("migrate", "--data", source.data, "--to-data", target, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"corrupt source blob (not copied): {layer}: the content hashes to" in done.stderr
    assert "Traceback" not in done.stderr
    with sqlite3.connect(target / "metadata.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM blob").fetchone() == (0,), "no row before every blob is whole"
    assert not (target / "blobs" / "sha256" / layer[7:9] / layer[7:]).exists()

    path.write_bytes(image.layers[1])  # repaired: the rerun copies the rest, and only that
    rerun = cli.json("migrate", "--data", source.data, "--to-data", target)
    assert rerun["ok"] and rerun["blobs_copied"] == 1 and rerun["blobs_present"] == 2


def test_every_table_of_the_schema_is_copied_or_knowingly_dropped(tmp_path: Path) -> None:
    database = tmp_path / "metadata.sqlite3"
    upgrade(database)
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {name: {row[1] for row in db.execute(f"PRAGMA table_info({name})")} for name in tables}
    assert tables == {t.name for t in TABLES} | set(DROPPED), "a new table must be migrated (or listed in DROPPED)"
    for table in TABLES:
        assert set(table.columns) == columns[table.name], f"{table.name}: every column is copied"
        assert set(table.key) <= set(table.columns)


def test_bad_arguments_are_one_clear_line(postgres: PostgresServer, s3: S3Server, tmp_path: Path) -> None:
    source = tmp_path / "source"
    upgrade(source / "metadata.sqlite3")
    cli = CargoholdCLI(tmp_path / "home", s3.environment())
    data = ["--data", str(source)]
    cases = [
        ([*data], "say where to migrate to"),
        ([*data, "--to-database", "mysql://x", "--to-blob-store", "s3://bucket"], "target: database must be empty"),
        ([*data, "--to-database", postgres.url("x")], "give --to-data DIR"),
        ([*data, "--to-data", str(tmp_path / "t"), "--to-blob-store", "s3://No_Such"], "target: blob_store"),
        ([*data, "--to-data", str(source)], "the target database is the source's"),
        (["--data", str(tmp_path / "nothing"), "--to-data", str(tmp_path / "t")], "no registry data in"),
        (
            [*data, "--to-database", "postgresql://u@127.0.0.1:1/x", "--to-blob-store", "s3://bucket"],
            "127.0.0.1:1",
        ),
        (
            [*data, "--to-data", str(tmp_path / "t2"), "--to-blob-store", "s3://no-such-bucket"],
            "the object store:",
        ),
    ]
    for args, expected in cases:
        if "s3://no-such-bucket" in args:
            args += ["--to-s3-endpoint", s3.endpoint]
        line = cli.fails("migrate", *args)
        assert expected in line and line.startswith("Error: "), (args, line)
