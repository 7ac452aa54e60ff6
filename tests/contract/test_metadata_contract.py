"""What every metadata store guarantees, whatever database it runs on: links, references,
tags and their history, immutability, quotas, and the races between writers (two handles on one
database stand for two worker processes or two replicas)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable

import pytest

from cargohold.oci.rules import Quota
from cargohold.storage.events import Actor
from cargohold.storage.interfaces import MetadataStore
from cargohold.storage.records import ImmutableTagError, ManifestRecord, MissingReferences, QuotaExceededError
from tests.contract.conftest import OpenMetadata

ACTOR = Actor("contract", "-", "test")


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest(
    name: str, blobs: list[str], subject: str | None = None, artifact_type: str | None = None
) -> ManifestRecord:
    payload = f'{{"name":"{name}","blobs":{blobs}}}'.encode()
    return ManifestRecord(
        digest="sha256:" + hashlib.sha256(payload).hexdigest(),
        media_type="application/vnd.oci.image.manifest.v1+json",
        artifact_type=artifact_type,
        subject=subject,
        payload=payload,
        blobs=tuple((blob, "config" if i == 0 else "layer") for i, blob in enumerate(blobs)),
        children=(),
    )


def in_parallel(*actions: Callable[[], object]) -> list[BaseException | object]:
    """Run the actions at the same moment; their results, or what each raised."""
    results: list[BaseException | object] = [None] * len(actions)
    start = threading.Barrier(len(actions))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = actions[i]()
        except BaseException as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_blob_is_readable_only_through_repositories_that_link_it(meta: MetadataStore) -> None:
    blob = digest_of("layer")
    meta.add_blob("team/a", blob, 100)
    assert meta.blob_size("team/a", blob) == 100
    assert meta.blob_size("team/b", blob) is None
    assert meta.mount_blob("team/b", blob, "team/a") == 100
    assert meta.mount_blob("team/c", digest_of("nothing"), "team/a") is None
    assert meta.unlink_blob("team/a", blob, ACTOR)
    assert meta.blob_size("team/a", blob) is None and meta.blob_size("team/b", blob) == 100
    assert not meta.unlink_blob("team/a", blob, ACTOR)


def test_a_manifest_needs_every_blob_it_references(meta: MetadataStore) -> None:
    config, layer = digest_of("config"), digest_of("layer")
    meta.add_blob("team/app", config, 10)
    record = manifest("one", [config, layer])
    with pytest.raises(MissingReferences) as missing:
        meta.put_manifest("team/app", record, "v1", actor=ACTOR)
    assert missing.value.blobs == [layer]
    assert meta.manifest_by_tag("team/app", "v1") is None
    meta.add_blob("team/app", layer, 20)
    meta.put_manifest("team/app", record, "v1", actor=ACTOR)
    stored = meta.manifest_by_tag("team/app", "v1")
    assert stored is not None and stored.payload == record.payload and stored.digest == record.digest
    assert meta.manifest_by_digest("team/app", record.digest) == stored
    assert meta.manifest_by_digest("team/other", record.digest) is None


def test_tags_move_list_in_order_and_go(meta: MetadataStore) -> None:
    blob = digest_of("b")
    meta.add_blob("team/app", blob, 1)
    first, second = manifest("first", [blob]), manifest("second", [blob])
    for tag in ("b", "a", "c"):
        meta.put_manifest("team/app", first, tag, actor=ACTOR)
    meta.put_manifest("team/app", second, "a", actor=ACTOR)  # moved
    assert meta.list_tags("team/app", None, None) == ["a", "b", "c"]
    assert meta.list_tags("team/app", 1, "a") == ["b"]
    assert meta.manifest_by_tag("team/app", "a").digest == second.digest  # type: ignore[union-attr]
    assert meta.delete_tag("team/app", "a", actor=ACTOR)
    assert not meta.delete_tag("team/app", "a", actor=ACTOR)
    assert meta.delete_manifest("team/app", first.digest, actor=ACTOR)
    assert meta.list_tags("team/app", None, None) == [], "deleting a manifest takes its tags"


def test_an_immutable_tag_neither_moves_nor_goes(meta: MetadataStore) -> None:
    blob = digest_of("b")
    meta.add_blob("prod/web", blob, 1)
    first, second = manifest("first", [blob]), manifest("second", [blob])

    def rule(tag: str) -> str | None:
        return "prod/*:v*" if tag.startswith("v") else None

    meta.put_manifest("prod/web", first, "v1", rule, actor=ACTOR)
    meta.put_manifest("prod/web", first, "v1", rule, actor=ACTOR)  # the same digest again is no move
    with pytest.raises(ImmutableTagError):
        meta.put_manifest("prod/web", second, "v1", rule, actor=ACTOR)
    with pytest.raises(ImmutableTagError):
        meta.delete_manifest("prod/web", first.digest, rule, actor=ACTOR)
    assert meta.manifest_by_tag("prod/web", "v1").digest == first.digest  # type: ignore[union-attr]


def test_referrers_by_subject_and_artifact_type(meta: MetadataStore) -> None:
    blob = digest_of("b")
    meta.add_blob("team/app", blob, 1)
    image = manifest("image", [blob])
    meta.put_manifest("team/app", image, "v1", actor=ACTOR)
    signature = manifest("sig", [blob], subject=image.digest, artifact_type="application/example.sig")
    sbom = manifest("sbom", [blob], subject=image.digest, artifact_type="application/example.sbom")
    for record in (signature, sbom):
        meta.put_manifest("team/app", record, None, actor=ACTOR)
    assert {r.digest for r in meta.referrers("team/app", image.digest, None)} == {signature.digest, sbom.digest}
    assert [r.digest for r in meta.referrers("team/app", image.digest, "application/example.sbom")] == [sbom.digest]
    assert meta.referrers("team/other", image.digest, None) == []


def test_upload_sessions_belong_to_their_repository(meta: MetadataStore) -> None:
    meta.create_upload("a" * 32, "team/app")
    assert meta.upload_repository("a" * 32) == "team/app"
    assert meta.upload_ids() == {"a" * 32}
    meta.add_blob("team/app", digest_of("x"), 5, upload_id="a" * 32)
    assert meta.upload_repository("a" * 32) is None, "a finished upload's session is gone with it"


def test_quota_race_lets_exactly_one_of_two_writers_through(open_metadata_handle: OpenMetadata) -> None:
    quotas = (Quota(limit=150, repositories="small/*"),)
    first, second = open_metadata_handle(), open_metadata_handle()
    results = in_parallel(
        lambda: first.add_blob("small/one", digest_of("first"), 100, quotas=quotas),
        lambda: second.add_blob("small/one", digest_of("second"), 100, quotas=quotas),
    )
    refused = [r for r in results if isinstance(r, QuotaExceededError)]
    assert len(refused) == 1, results
    assert first.usage("repository", "small/one") == 100


def test_collection_never_removes_a_blob_a_concurrent_manifest_references(open_metadata_handle: OpenMetadata) -> None:
    pusher, collector = open_metadata_handle(), open_metadata_handle()
    blobs = [digest_of(f"blob-{i}") for i in range(40)]
    for blob in blobs:
        pusher.add_blob("team/race", blob, 10)
    future = time.time() + 3600  # every unreferenced blob may be collected at once

    def push_all() -> None:
        for i, blob in enumerate(blobs):
            # When collection wins, the push is refused (MissingReferences), never half-stored.
            with contextlib.suppress(MissingReferences):
                pusher.put_manifest("team/race", manifest(f"m{i}", [blob]), f"t{i}", actor=ACTOR)

    def collect_all() -> None:
        for _ in range(20):
            collector.delete_unreferenced_blobs(future, 5)

    in_parallel(push_all, collect_all)
    for i, blob in enumerate(blobs):
        stored = pusher.manifest_by_tag("team/race", f"t{i}")
        if stored is not None:
            assert pusher.blob_size("team/race", blob) == 10, f"t{i} references a collected blob"


def test_two_handles_see_each_others_writes(open_metadata_handle: OpenMetadata) -> None:
    writer, reader = open_metadata_handle(), open_metadata_handle()
    blob = digest_of("shared")
    writer.add_blob("team/app", blob, 7)
    assert reader.blob_size("team/app", blob) == 7
    assert reader.repository_exists("team/app")
