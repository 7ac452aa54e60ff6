"""Garbage collection: frees what nothing references, keeps everything else, even mid-push."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cargohold.lifecycle.gc import collect_garbage
from cargohold.storage.blobstore import FilesystemBlobStore
from cargohold.storage.metadata import SQLiteMetadataStore
from tests.support.oci import OCI_MANIFEST, Image, canonical, descriptor, make_image, push_blob, push_image, sha256
from tests.support.servers import Cargohold
from tests.support.store import assert_store_consistent


def gc(data: Path, *args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "cargohold", "gc", "--data", str(data), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def age_blobs(data: Path, seconds: float) -> None:
    """Pretend every blob was last used `seconds` ago."""
    with sqlite3.connect(data / "metadata.sqlite3") as db:
        db.execute("UPDATE blob SET last_touched = last_touched - ?", (seconds,))


def image_sharing_layer(shared: bytes) -> Image:
    image = make_image(layer_count=1)
    config = canonical({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()})
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", shared)]
            + [descriptor("application/vnd.oci.image.layer.v1.tar", layer) for layer in image.layers],
        }
    )
    return Image(config, [shared, *image.layers], manifest)


def pulls_completely(client: httpx.Client, repo: str, image: Image) -> bool:
    for blob in [image.config, *image.layers]:
        response = client.get(f"/v2/{repo}/blobs/{sha256(blob)}")
        if response.status_code != 200 or response.content != blob:
            return False
    return True


def test_gc_frees_only_what_nothing_references(fresh_cargohold: Cargohold) -> None:
    shared = os.urandom(20_000)
    kept, dropped = image_sharing_layer(shared), image_sharing_layer(shared)
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        push_image(c, "gc/app", kept, "v1")
        push_image(c, "gc/app", dropped, "v2")
        stray = push_blob(c, "gc/app", os.urandom(5_000))
        assert c.delete(f"/v2/gc/app/manifests/{dropped.digest}").status_code == 202
    data = fresh_cargohold.data
    # Within the grace period nothing goes, referenced or not.
    assert gc(data)["blobs"] == 0
    age_blobs(data, 7200)
    preview = gc(data, "--dry-run")
    unique = [dropped.config, dropped.layers[1]]
    assert preview["blobs"] == 3
    assert preview["bytes"] == sum(len(b) for b in unique) + 5_000
    report = gc(data)
    assert (report["blobs"], report["bytes"]) == (preview["blobs"], preview["bytes"])
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        assert pulls_completely(c, "gc/app", kept)
        for gone in [*unique, stray]:
            digest = gone if isinstance(gone, str) else sha256(gone)
            assert c.head(f"/v2/gc/app/blobs/{digest}").status_code == 404
    assert gc(data, "--grace", "0s")["blobs"] == 0
    assert_store_consistent(data)


def test_head_rescues_a_blob_from_collection(fresh_cargohold: Cargohold) -> None:
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        wanted = push_blob(c, "gc/rescue", os.urandom(1000))
        unwanted = push_blob(c, "gc/rescue", os.urandom(1000))
        age_blobs(fresh_cargohold.data, 7200)
        # A client about to push a manifest HEADs the blob it will reference.
        assert c.head(f"/v2/gc/rescue/blobs/{wanted}").status_code == 200
        assert gc(fresh_cargohold.data, "--grace", "1h")["blobs"] == 1
        assert c.head(f"/v2/gc/rescue/blobs/{wanted}").status_code == 200
        assert c.head(f"/v2/gc/rescue/blobs/{unwanted}").status_code == 404


def test_unrecorded_files_go_after_the_grace_period(fresh_cargohold: Cargohold) -> None:
    content = os.urandom(3000)
    digest = sha256(content)
    path = fresh_cargohold.data / "blobs" / "sha256" / digest[7:9] / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)  # as if a crash struck between the file and its record
    assert gc(fresh_cargohold.data)["orphan_files"] == 0
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert gc(fresh_cargohold.data)["orphan_files"] == 1
    assert not path.exists()


def test_gc_in_a_loop_while_clients_push_and_delete(fresh_cargohold: Cargohold) -> None:
    """Pushes (shared and unique layers) and deletes race a GC that runs in another process
    with a 3 s grace period; afterwards every image still tagged pulls completely."""
    shared = [os.urandom(50_000) for _ in range(3)]
    images = {f"race/app{i % 4}:t{i}": image_sharing_layer(random.choice(shared)) for i in range(60)}
    stop = threading.Event()
    runs = 0
    retried: list[str] = []

    def collector() -> None:
        nonlocal runs
        meta = SQLiteMetadataStore(fresh_cargohold.data / "metadata.sqlite3")
        store = FilesystemBlobStore(fresh_cargohold.data)
        try:
            while not stop.is_set():
                collect_garbage(meta, store, grace=3.0)
                runs += 1
        finally:
            meta.close()

    def push(reference: str) -> None:
        repo, tag = reference.split(":")
        image = images[reference]
        blobs = {sha256(blob): blob for blob in [image.config, *image.layers]}
        with httpx.Client(base_url=fresh_cargohold.url, timeout=60) as c:
            for digest, blob in blobs.items():
                # Like real clients: skip what the registry says it has.
                if c.head(f"/v2/{repo}/blobs/{digest}").status_code != 200:
                    push_blob(c, repo, blob)
                time.sleep(0.02)  # let the collector interleave
            for _ in range(5):
                response = c.put(
                    f"/v2/{repo}/manifests/{tag}", content=image.manifest, headers={"content-type": OCI_MANIFEST}
                )
                if response.status_code != 404:
                    break
                # Under load a push can outlast this test's 3 s grace period: the registry then
                # refuses the manifest (never stores a broken one), and the client sends again.
                retried.append(reference)
                for digest in response.json()["errors"][0]["detail"]["blobs"]:
                    push_blob(c, repo, blobs[digest])
            assert response.status_code == 201, response.text
            if int(tag[1:]) % 3 == 0:
                assert c.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202

    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    try:
        pushers = [threading.Thread(target=push, args=(ref,)) for ref in images]
        for thread in pushers:
            thread.start()
        for thread in pushers:
            thread.join()
    finally:
        stop.set()
        gc_thread.join()
    assert runs > 5, "the collector should have run many times during the pushes"
    assert len(retried) < len(images) / 2, f"too many pushes outlasted the grace period: {retried}"

    with httpx.Client(base_url=fresh_cargohold.url) as c:
        for reference, image in images.items():
            repo, tag = reference.split(":")
            if int(tag[1:]) % 3 == 0:
                assert c.get(f"/v2/{repo}/manifests/{tag}").status_code == 404
                continue
            assert c.get(f"/v2/{repo}/manifests/{tag}").content == image.manifest
            assert pulls_completely(c, repo, image), f"{reference} lost a blob to GC"
    age_blobs(fresh_cargohold.data, 7200)
    gc(fresh_cargohold.data)
    with sqlite3.connect(fresh_cargohold.data / "metadata.sqlite3") as db:
        unreferenced = db.execute(
            "SELECT count(*) FROM blob WHERE NOT EXISTS (SELECT 1 FROM manifest_ref r WHERE r.child = blob.digest)"
        ).fetchone()[0]
    assert unreferenced == 0
    assert_store_consistent(fresh_cargohold.data)


def age_manifests(data: Path, seconds: float) -> None:
    with sqlite3.connect(data / "metadata.sqlite3") as db:
        db.execute("UPDATE manifest SET created = created - ?", (seconds,))


def test_manifests_nothing_keeps_alive_are_collected(fresh_cargohold: Cargohold) -> None:
    repo, data = "gc/graph", fresh_cargohold.data
    subject, loose = make_image(), make_image()
    children = [make_image(), make_image()]
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        push_image(c, repo, subject, "v1")
        push_image(c, repo, loose)
        for child in children:
            push_image(c, repo, child)
        index = canonical(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [descriptor(OCI_MANIFEST, child.manifest) for child in children],
            }
        )
        headers = {"content-type": "application/vnd.oci.image.index.v1+json"}
        assert c.put(f"/v2/{repo}/manifests/multi", content=index, headers=headers).status_code == 201
        push_blob(c, repo, b"{}")
        manifest_type = {"content-type": OCI_MANIFEST}
        referrer = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sbom",
                "config": descriptor("application/vnd.oci.empty.v1+json", b"{}"),
                "layers": [],
                "subject": descriptor(OCI_MANIFEST, subject.manifest),
            }
        )
        push = c.put(f"/v2/{repo}/manifests/{sha256(referrer)}", content=referrer, headers=manifest_type)
        assert push.status_code == 201
        assert c.delete(f"/v2/{repo}/manifests/{subject.digest}").status_code == 202
        age_manifests(data, 7200)
        age_blobs(data, 7200)

        # The referrer of the deleted subject goes; untagged manifests stay by default.
        assert gc(data)["manifests"] == 1
        assert c.get(f"/v2/{repo}/manifests/{sha256(referrer)}").status_code == 404
        assert c.get(f"/v2/{repo}/manifests/{loose.digest}").status_code == 200
        # With an age for untagged manifests, the loose one goes; the tagged index's children stay.
        assert gc(data, "--untagged-age", "1h")["manifests"] == 1
        assert c.get(f"/v2/{repo}/manifests/{loose.digest}").status_code == 404
        for child in children:
            assert pulls_completely(c, repo, child)
        # Untag the index: it and its children go, then their blobs (which the pulls just
        # touched, so they are aged again to fall outside the grace period).
        assert c.delete(f"/v2/{repo}/manifests/multi").status_code == 202
        age_blobs(data, 7200)
        report = gc(data, "--untagged-age", "1h")
        assert report["manifests"] == 3
        assert report["blobs"] == sum(1 + len(child.layers) for child in children)
    assert_store_consistent(data)


def _counts(data: Path) -> tuple[int, int, int]:
    with sqlite3.connect(data / "metadata.sqlite3") as db:
        manifests = db.execute("SELECT count(*) FROM manifest").fetchone()[0]
        blobs = db.execute("SELECT count(*) FROM blob").fetchone()[0]
    files = sum(1 for p in (data / "blobs").glob("*/*/*") if p.name != ".lock")
    return manifests, blobs, files


def test_dry_run_previews_manifests_and_the_blobs_they_free(fresh_cargohold: Cargohold) -> None:
    """`gc --dry-run` names the manifests a collection would delete (an orphaned referrer, an
    untagged manifest past --untagged-age) and counts the blobs only they reference, changing
    nothing; the real collection then frees exactly that."""
    repo, data = "gc/preview", fresh_cargohold.data
    subject, loose, kept = make_image(), make_image(), make_image()
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        push_image(c, repo, subject, "v1")
        push_image(c, repo, loose)  # untagged
        push_image(c, repo, kept, "v2")
        empty_config = b'{"preview":true}'
        push_blob(c, repo, empty_config)
        referrer = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sbom",
                "config": descriptor("application/vnd.oci.empty.v1+json", empty_config),
                "layers": [],
                "subject": descriptor(OCI_MANIFEST, subject.manifest),
            }
        )
        headers = {"content-type": OCI_MANIFEST}
        assert c.put(f"/v2/{repo}/manifests/{sha256(referrer)}", content=referrer, headers=headers).status_code == 201
        assert c.delete(f"/v2/{repo}/manifests/{subject.digest}").status_code == 202
    age_manifests(data, 7200)
    age_blobs(data, 7200)
    before = _counts(data)

    preview = gc(data, "--dry-run", "--untagged-age", "1h")
    assert preview["dry_run"] is True
    assert sorted(preview["manifest_list"]) == sorted([f"{repo}@{loose.digest}", f"{repo}@{sha256(referrer)}"])
    assert preview["manifests"] == 2
    # The subject's blobs (already unreferenced), the loose image's and the referrer's config.
    freed = [subject.config, *subject.layers, loose.config, *loose.layers, empty_config]
    assert (preview["blobs"], preview["bytes"]) == (len(freed), sum(len(b) for b in freed))
    assert _counts(data) == before, "a dry run must change nothing"

    text = subprocess.run(
        [sys.executable, "-m", "cargohold", "gc", "--data", str(data), "--dry-run", "--untagged-age", "1h"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"would free manifest {repo}@{loose.digest}" in text
    assert f"would free manifest {repo}@{sha256(referrer)}" in text
    assert f"would free 2 manifest(s), {len(freed)} blob(s)" in text
    assert _counts(data) == before

    report = gc(data, "--untagged-age", "1h")
    assert sorted(report["manifest_list"]) == sorted(preview["manifest_list"])
    assert (report["blobs"], report["bytes"]) == (preview["blobs"], preview["bytes"])
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        assert c.get(f"/v2/{repo}/manifests/v2").content == kept.manifest
        assert pulls_completely(c, repo, kept)
    assert_store_consistent(data)
