"""A fleet, all on loopback: PostgreSQL of the test's own, moto's S3 server (radosgw in `make
test-ceph`), three cargohold replicas and nginx in front. Through the balancer: docker and
skopeo push and pull; a replica killed mid-push does not stop the client's retry from completing
through the others; garbage collection looping while 200 images are pushed leaves every
surviving tag pullable and no unreferenced blob in the bucket; PostgreSQL stopped mid-push gives
503s and the push completes once it is back. And an upload begun on replica 1 is finished on
replica 3."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from cargohold.storage.s3 import s3_client
from tests.support.balancer import Nginx
from tests.support.clients import ContainersTools, Dockerd, hello_context, static_busybox
from tests.support.oci import make_image, push_image, sha256, with_query
from tests.support.postgres import PostgresServer
from tests.support.race import RaceTarget, cargohold_freed, doomed, make_images, new_seed, run_race
from tests.support.s3 import REGION, S3Server
from tests.support.servers import Cargohold, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

REPLICAS = 3
# A blob is a push's own for this long before collection may take it: a push through the
# balancer to S3 makes several object-store calls per blob, and each one that outlasts the
# grace is refused and sent again (allowed, but it must stay the exception).
GRACE = 3.0


@dataclass
class Fleet:
    database: PostgresServer
    url: str  # the database's
    s3: S3Server
    bucket: str
    replicas: list[Cargohold]
    balancer: Nginx
    env: dict[str, str]

    def blob_keys(self) -> set[str]:
        pages = s3_client(self.s3.endpoint, REGION).get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return {key for key in keys if key.startswith("blobs/")}

    def blob_digests(self) -> set[str]:
        return {f"{key.split('/')[1]}:{key.rsplit('/', 1)[1]}" for key in self.blob_keys()}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cargohold", *args, "--data", str(self.replicas[0].data)]

    def command_env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_")}
        return {**clean, **self.env}


@pytest.fixture
def fleet(s3: S3Server, tmp_path: Path) -> Iterator[Fleet]:
    # A PostgreSQL of the test's own, under /tmp: as root it runs as `postgres`, which may not
    # enter pytest's directories.
    database = PostgresServer(Path(f"/tmp/cargohold-fleet-pg-{os.getpid()}")).start()
    url = database.create_database()
    bucket = s3.create_bucket()
    env = {
        **s3.environment(),
        "CARGOHOLD_DATABASE": url,
        "CARGOHOLD_BLOB_STORE": f"s3://{bucket}",
        "CARGOHOLD_SECRET_FILE": str(tmp_path / "secret.key"),
        "CARGOHOLD_WORKERS": "1",
    }
    replicas = [Cargohold(tmp_path / f"replica{n}", extra_env=env, port=free_port()) for n in range(REPLICAS)]
    balancer = Nginx(tmp_path / "nginx", [replica.port for replica in replicas])
    try:
        for replica in replicas:
            replica.start()
        balancer.start()
        yield Fleet(database, url, s3, bucket, replicas, balancer, env)
    finally:
        balancer.stop()
        for replica in replicas:
            replica.stop()
        database.stop()
        subprocess.run(["rm", "-rf", str(database.workdir)], check=False)


def served_by_each(fleet: Fleet) -> None:
    """Every replica answered through the balancer: round robin reached them all."""
    for replica in fleet.replicas:
        assert re.search(r'"(GET|HEAD|PUT|PATCH|POST) /v2/team/', replica.log_text()), f"{replica.url} got no request"


def test_docker_and_skopeo_through_the_balancer(
    fleet: Fleet, dockerd: Dockerd, containers: ContainersTools, tmp_path: Path
) -> None:
    image = f"{fleet.balancer.host}/team/hello:v1"
    context = hello_context(tmp_path / "ctx", os.urandom(3 << 20).hex().encode(), recipe="Dockerfile")
    dockerd.run("build", "--network", "host", "-t", image, context)
    pushed = dockerd.run("push", image).stdout
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert digest, pushed
    dockerd.run("rmi", image)
    assert f"Digest: {digest[1]}" in dockerd.run("pull", image).stdout
    ran = dockerd.run("run", "--rm", "--network", "host", image).stdout
    assert ran.encode() == (context / "hello.txt").read_bytes()

    out = tmp_path / "out"
    copied = f"docker://{fleet.balancer.host}/team/copied:v1"
    containers.skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{image}", copied)
    containers.skopeo("copy", "--src-tls-verify=false", copied, f"dir:{out}")
    manifest = (out / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest[1], "the same manifest, byte for byte"
    for layer in json.loads(manifest)["layers"]:
        assert (
            "sha256:" + hashlib.sha256((out / layer["digest"].split(":")[1]).read_bytes()).hexdigest()
            == layer["digest"]
        )
    served_by_each(fleet)


def _received(port: int) -> int:
    """Bytes received so far on the connections to `port` (ss's bytes_received, per socket)."""
    listed = subprocess.run(
        ["ss", "-tniH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return sum(int(n) for n in re.findall(r"bytes_received:(\d+)", listed))


def receiving(replica: Cargohold) -> bool:
    """Whether a request body is streaming into the replica now (over 256 KiB in 50 ms). A short
    window: a 40 MiB layer streams in well under a second, and a kill that comes after the body
    ended would find no request in flight."""
    before = _received(replica.port)
    time.sleep(0.05)
    return _received(replica.port) - before > (256 << 10)


def test_a_replica_killed_mid_push_loses_nothing(fleet: Fleet, dockerd: Dockerd, tmp_path: Path) -> None:
    """docker pushes three 40 MiB layers; a replica is killed with SIGKILL while it receives
    one; docker retries through the balancer, which skips the dead replica. A kill that came a
    moment after the body ended (no request in flight: nothing was tested) is tried again with
    a new image, up to three times."""
    victim = fleet.replicas[1]
    error_log = fleet.balancer.workdir / "error.log"
    cut_off = f'upstream: "http://127.0.0.1:{victim.port}/'
    for attempt in range(3):
        context = tmp_path / f"ctx{attempt}"
        context.mkdir()
        for n in range(3):
            (context / f"noise{n}").write_bytes(os.urandom(40 << 20))
        shutil.copy(static_busybox(), context / "busybox")
        (context / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            + "".join(f"COPY noise{n} /noise{n}\n" for n in range(3))
            + 'CMD ["/bin/busybox", "sha256sum", "/noise0", "/noise1", "/noise2"]\n'
        )
        image = f"{fleet.balancer.host}/team/big:v{attempt}"
        dockerd.run("build", "--network", "host", "-t", image, context)
        cuts_before = error_log.read_text().count(cut_off) if error_log.exists() else 0
        result: dict[str, subprocess.CompletedProcess[str]] = {}
        push = threading.Thread(
            target=lambda out=result, name=image: out.update(push=dockerd.run("push", name, check=False))
        )
        push.start()
        wait_until(
            lambda job=push: receiving(victim) or not job.is_alive(), "the victim to receive a layer", timeout=120
        )
        victim.kill()
        push.join(timeout=600)
        done = result["push"]
        assert done.returncode == 0, done.stdout + done.stderr
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", done.stdout)
        assert digest, done.stdout
        if error_log.read_text().count(cut_off) > cuts_before:
            break
        victim.start()
    else:
        raise AssertionError("the replica never died with a request in flight in three pushes")
    victim.start()  # back in the pool, so the pull may be served by any replica
    dockerd.run("rmi", image)
    dockerd.run("pull", image)
    sums = dockerd.run("run", "--rm", "--network", "host", image).stdout.split()
    assert sums[0::2] == [hashlib.sha256((context / f"noise{n}").read_bytes()).hexdigest() for n in range(3)]
    with psycopg.connect(fleet.url) as db:
        recorded = {row[0] for row in db.execute("SELECT digest FROM blob")}
    assert recorded <= fleet.blob_digests(), "every recorded blob is in the bucket"


def test_gc_loops_while_200_images_are_pushed_through_the_balancer(fleet: Fleet, containers: ContainersTools) -> None:
    seed = int(os.environ.get("CARGOHOLD_RACE_SEED") or new_seed())
    print(f"race seed {seed} (rerun with CARGOHOLD_RACE_SEED={seed})")
    target = RaceTarget(
        "cargohold fleet",
        fleet.balancer.url,
        fleet.balancer.host,
        fleet.command("gc", "--json", "--grace", f"{GRACE}s"),
        fleet.blob_digests,
        False,
        cargohold_freed,
    )
    images = make_images(200, repos=8, seed=seed)
    result = run_race(
        target, images, grace=GRACE, seed=seed, collector_env=fleet.command_env(), skopeo_env=containers.env, log=print
    )
    print(json.dumps(result.__dict__, indent=2))
    assert result.push_failures == []
    assert result.pushed == 200
    assert result.manifest_retries < 50, f"{result.manifest_retries} manifest retries"
    assert result.uploads_refused == 0
    assert result.deleted == sum(doomed(reference) for reference in images)
    assert result.gc_failures == 0, result.gc_errors
    assert result.gc_runs >= 3, "the collector loop should have run throughout the pushes"
    assert result.gc_freed_blobs > 0
    assert result.lost_tags == [] and result.undead_tags == []
    assert result.pull_failures == [], "\n".join(result.pull_failures)
    assert result.missing_blobs == 0
    assert result.unreferenced_blobs == 0, "blobs no surviving image uses were left in the bucket after a final gc"
    with psycopg.connect(fleet.url) as db:
        unreferenced = db.execute(
            "SELECT count(*) FROM blob WHERE NOT EXISTS (SELECT 1 FROM manifest_ref r WHERE r.child = blob.digest)"
        ).fetchone()
    assert unreferenced == (0,)
    scrubbed = subprocess.run(
        fleet.command("scrub", "--json"), capture_output=True, text=True, env=fleet.command_env(), timeout=300
    )
    assert scrubbed.returncode == 0, scrubbed.stdout + scrubbed.stderr
    assert json.loads(scrubbed.stdout)["healthy"] is True
    listed = httpx.get(f"{fleet.balancer.url}/v2/_catalog").json()["repositories"]
    assert len(listed) == 8


def test_postgresql_stopped_mid_push_gives_503_then_the_push_completes(fleet: Fleet) -> None:
    """Through the balancer, on every replica alike: 503 with Retry-After while the database is
    down, never a 500, and the same requests succeed once it is back."""
    data = os.urandom(3 << 20)
    image = make_image(layer_size=50_000)
    with httpx.Client(base_url=fleet.balancer.url, timeout=60) as c:
        begun = c.post("/v2/team/outage/blobs/uploads/")
        assert begun.status_code == 202
        port = fleet.database.port
        fleet.database.stop()
        for _ in range(REPLICAS):  # round robin: each replica answers one of them
            sent = c.patch(begun.headers["location"], content=data, headers={"content-range": f"0-{len(data) - 1}"})
            assert sent.status_code == 503, sent.text
            assert int(sent.headers["retry-after"]) > 0
            assert sent.json()["errors"][0]["code"] == "UNAVAILABLE"
        fleet.database.start(port=port)
        # Each replica's pool still holds connections the restart cut: they are checked and
        # replaced before use, so the first request on every replica already succeeds.
        for replica in fleet.replicas:
            with replica.client() as direct:
                status = direct.get(begun.headers["location"])
                assert status.status_code == 204, f"{replica.url}: {status.text}"
        sent = c.patch(begun.headers["location"], content=data, headers={"content-range": f"0-{len(data) - 1}"})
        assert sent.status_code == 202, sent.text
        done = c.put(with_query(sent.headers["location"], digest=sha256(data)))
        assert done.status_code == 201, done.text
        assert push_image(c, "team/outage", image, "v1").status_code == 201
        assert c.get(f"/v2/team/outage/blobs/{sha256(data)}").content == data
        assert c.get("/v2/team/outage/manifests/v1").content == image.manifest
    for replica in fleet.replicas:
        assert '" 500 ' not in replica.log_text(), replica.url


def test_an_upload_started_on_replica_1_is_finished_on_replica_3(fleet: Fleet) -> None:
    first, second = os.urandom((10 << 20) + 3), os.urandom(5 << 20)
    blob = first + second
    with fleet.replicas[0].client() as one, fleet.replicas[2].client() as three:
        begun = one.post("/v2/team/handoff/blobs/uploads/")
        sent = one.patch(begun.headers["location"], content=first, headers={"content-range": f"0-{len(first) - 1}"})
        assert sent.status_code == 202, sent.text
        chunk = {"content-range": f"{len(first)}-{len(blob) - 1}"}
        more = three.patch(sent.headers["location"], content=second, headers=chunk)
        assert more.status_code == 202 and more.headers["range"] == f"0-{len(blob) - 1}", more.text
        done = three.put(with_query(more.headers["location"], digest=sha256(blob)))
        assert done.status_code == 201, done.text
    with httpx.Client(base_url=fleet.balancer.url, timeout=60) as c:
        assert c.get(f"/v2/team/handoff/blobs/{sha256(blob)}").content == blob
