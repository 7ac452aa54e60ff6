"""The registry with its blobs on S3 (moto's server; radosgw in `make test-ceph`): real clients
push and pull through it, large layers go up as multipart uploads, an upload begun on one
replica is finished on another, downloads can be redirected to presigned URLs, and the
maintenance commands work on the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from cargohold.storage.s3 import s3_client
from tests.support.clients import ContainersTools, build_umoci_image, layout_blob, layout_digest
from tests.support.oci import make_image, push_image, sha256, with_query
from tests.support.postgres import PostgresServer
from tests.support.s3 import REGION, S3Server
from tests.support.servers import Cargohold


def bucket_keys(s3: S3Server, bucket: str) -> list[str]:
    pages = s3_client(s3.endpoint, REGION).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def cargohold(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )


def test_skopeo_through_a_registry_on_s3(s3: S3Server, containers: ContainersTools, tmp_path: Path) -> None:
    bucket = s3.create_bucket()
    env = {**s3.environment(), "CARGOHOLD_BLOB_STORE": f"s3://{bucket}/registry"}
    server = Cargohold(tmp_path / "registry", extra_env=env).start()
    try:
        layout = tmp_path / "img"
        # A 23 MiB layer of noise: three parts of a multipart upload and a tail.
        digest = build_umoci_image(layout, "v1", [{"noise": os.urandom(23 << 20)}, {"small": b"hello"}])
        ref = f"docker://{server.host}/team/big:v1"
        containers.skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", ref)
        out = tmp_path / "out"
        containers.skopeo("copy", "--src-tls-verify=false", ref, f"oci:{out}:pulled")
        assert layout_digest(out, "pulled") == digest
        manifest = json.loads(layout_blob(layout, digest))
        for layer in manifest["layers"]:
            assert layout_blob(out, layer["digest"]) == layout_blob(layout, layer["digest"])
        with server.client() as c:  # a range of a blob that lives in the bucket
            big = manifest["layers"][0]["digest"]
            part = c.get(f"/v2/team/big/blobs/{big}", headers={"range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == layout_blob(layout, big)[100:200]
    finally:
        server.stop()
    keys = bucket_keys(s3, bucket)
    stored = {key.rsplit("/", 1)[1] for key in keys if key.startswith("registry/blobs/sha256/")}
    expected = {d["digest"].split(":")[1] for d in [manifest["config"], *manifest["layers"]]}
    assert expected <= stored, "every blob is in the bucket, under its digest"
    assert not [key for key in keys if key.startswith("registry/uploads/")], "no upload is left behind"
    local = server.data / "blobs"
    assert not (local.exists() and any(p.is_file() for p in local.rglob("*"))), "no blob went to the data directory"

    data = ["--data", str(server.data)]
    scrubbed = cargohold(env, "scrub", "--json", *data)
    assert scrubbed.returncode == 0, scrubbed.stdout + scrubbed.stderr
    assert json.loads(scrubbed.stdout)["checked"] == len(expected)


def test_an_upload_begun_on_one_replica_is_finished_on_another(
    s3: S3Server, postgres: PostgresServer, tmp_path: Path
) -> None:
    env = {
        **s3.environment(),
        "CARGOHOLD_BLOB_STORE": f"s3://{s3.create_bucket()}",
        "CARGOHOLD_DATABASE": postgres.create_database(),
        "CARGOHOLD_SECRET_FILE": str(tmp_path / "secret.key"),
    }
    replicas = [Cargohold(tmp_path / f"replica{n}", extra_env=env).start() for n in (1, 2, 3)]
    try:
        pieces = [os.urandom(n) for n in ((6 << 20) + 1, 3 << 20, (11 << 20) + 7)]
        blob = b"".join(pieces)
        clients = [replica.client() for replica in replicas]
        begun = clients[0].post("/v2/team/spread/blobs/uploads/")
        assert begun.status_code == 202, begun.text
        location = begun.headers["location"]
        offset = 0
        for client, piece in zip(clients, pieces, strict=True):  # each chunk to the next replica
            sent = client.patch(
                location,
                content=piece,
                headers={
                    "content-type": "application/octet-stream",
                    "content-range": f"{offset}-{offset + len(piece) - 1}",
                },
            )
            assert sent.status_code == 202, sent.text
            offset += len(piece)
            assert sent.headers["range"] == f"0-{offset - 1}"
            location = sent.headers["location"]
        status = clients[1].get(location)
        assert status.status_code == 204 and status.headers["range"] == f"0-{len(blob) - 1}"
        done = clients[2].put(with_query(location, digest=sha256(blob)))
        assert done.status_code == 201, done.text
        for client in clients:
            assert client.get(f"/v2/team/spread/blobs/{sha256(blob)}").content == blob

        # A wrong digest is refused on whichever replica gets it, and leaves nothing.
        begun = clients[0].post("/v2/team/spread/blobs/uploads/")
        sent = clients[1].patch(begun.headers["location"], content=b"not what is claimed")
        wrong = clients[2].put(with_query(sent.headers["location"], digest=sha256(b"something else")))
        assert wrong.status_code == 400 and wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert clients[0].get(f"/v2/team/spread/blobs/{sha256(b'not what is claimed')}").status_code == 404

        image = make_image(layer_size=200_000)
        assert push_image(clients[1], "team/app", image, "v1").status_code == 201
        assert clients[2].get("/v2/team/app/manifests/v1").content == image.manifest
        for client in clients:
            client.close()
    finally:
        for replica in replicas:
            replica.stop()


def test_downloads_redirect_to_presigned_urls(s3: S3Server, tmp_path: Path) -> None:
    env = {**s3.environment(), "CARGOHOLD_BLOB_STORE": f"s3://{s3.create_bucket()}", "CARGOHOLD_S3_REDIRECT": "true"}
    server = Cargohold(tmp_path / "registry", extra_env=env).start()
    try:
        image = make_image(layer_size=100_000)
        with server.client() as c:
            push_image(c, "team/app", image, "v1")
            layer = sha256(image.layers[0])
            answer = c.get(f"/v2/team/app/blobs/{layer}")
            assert answer.status_code == 307
            target = answer.headers["location"]
            assert target.startswith(f"{s3.endpoint}/") and "X-Amz-Signature=" in target, target
            assert httpx.get(target).content == image.layers[0], "the presigned URL serves the blob"
            head = c.head(f"/v2/team/app/blobs/{layer}")
            assert head.status_code == 200 and head.headers["content-length"] == str(len(image.layers[0]))
            missing = c.get(f"/v2/team/app/blobs/{sha256(b'absent')}")
            assert missing.status_code == 404, "nothing is redirected that the repository does not hold"
    finally:
        server.stop()


def test_a_bad_blob_store_setting_is_one_clear_line(tmp_path: Path) -> None:
    refused = cargohold(
        {"CARGOHOLD_BLOB_STORE": "s3://Bad_Bucket"}, "serve", "--data", str(tmp_path), "--listen", "127.0.0.1:0"
    )
    assert refused.returncode != 0
    assert "blob_store 's3://Bad_Bucket' must be empty (the data directory) or s3://bucket[/prefix]" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_missing_bucket_or_missing_credentials_is_one_clear_line(s3: S3Server, tmp_path: Path) -> None:
    serve = ("serve", "--data", str(tmp_path), "--listen", "127.0.0.1:0")
    missing = cargohold({**s3.environment(), "CARGOHOLD_BLOB_STORE": "s3://no-such-bucket"}, *serve)
    assert missing.returncode != 0
    assert f"the bucket s3://no-such-bucket at {s3.endpoint} does not exist: create it first" in missing.stderr
    anonymous = {k: v for k, v in s3.environment().items() if not k.startswith("AWS_")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CARGOHOLD_", "AWS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "cargohold", *serve],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **anonymous, "CARGOHOLD_BLOB_STORE": f"s3://{s3.create_bucket()}", "HOME": str(tmp_path)},
    )
    assert done.returncode != 0
    assert "no S3 credentials for s3://" in done.stderr and "AWS_ACCESS_KEY_ID" in done.stderr
    for refused in (missing, done):
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
