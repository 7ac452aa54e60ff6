"""The registry's services called directly, without HTTP: what the pipeline and the deployer
will do. Each service keeps the guarantees the HTTP API shows (all-or-nothing chunks, digest
verification, references checked, immutable tags, quotas)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cargohold.config import load_config
from cargohold.oci.digest import Digest
from cargohold.oci.errors import ErrorCode, RegistryError
from cargohold.services import Services
from cargohold.services.uploads import BytesBody, ChunkOutOfOrder
from cargohold.storage.events import Actor
from tests.support.oci import OCI_MANIFEST, canonical, descriptor, sha256
from tests.support.store import assert_store_consistent

ACTOR = Actor("pipeline", "-", "test")
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


class CutBody(BytesBody):
    """A body whose connection drops after `keep` bytes."""

    def __init__(self, data: bytes, keep: int) -> None:
        super().__init__(data, chunk=max(1, keep))
        self.keep = keep

    async def body_chunks(self, read_ahead: bool = False) -> AsyncIterator[bytes]:
        yield self._data[: self.keep]
        raise ConnectionResetError("the client went away")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    quotas = json.dumps([{"repositories": "small/*", "limit": "10KiB"}])
    config = load_config(
        environ={
            "CARGOHOLD_DATA": str(tmp_path / "data"),
            "CARGOHOLD_IMMUTABLE_TAGS": "prod/*:v*",
            "CARGOHOLD_QUOTAS": quotas,
        }
    )
    built = Services(config)
    yield built
    built.close()
    assert_store_consistent(config.data)


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def image(config: bytes, layer: bytes) -> bytes:
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(CONFIG_TYPE, config),
            "layers": [descriptor(LAYER_TYPE, layer)],
        }
    )


def test_chunked_upload_resumes_after_a_cut_chunk(services: Services) -> None:
    data = os.urandom(300_000)
    digest = Digest.parse(sha256(data))

    async def scenario() -> int:
        uploads = services.uploads
        session = uploads.begin("team/app")
        assert await uploads.append("team/app", session, BytesBody(data[:100_000]), (0, 99_999)) == 100_000
        with pytest.raises(ConnectionResetError):
            await uploads.append("team/app", session, CutBody(data[100_000:200_000], 40_000))
        kept = await uploads.size("team/app", session)  # the cut chunk left nothing behind
        with pytest.raises(ChunkOutOfOrder):
            await uploads.append("team/app", session, BytesBody(data[150_000:]), (150_000, len(data) - 1))
        await uploads.complete("team/app", session, digest, BytesBody(data[kept:]), (kept, len(data) - 1))
        return kept

    assert run(scenario()) == 100_000
    found = services.blobs.find("team/app", digest)
    assert found.size == len(data) and found.path.read_bytes() == data


def test_wrong_digest_stores_nothing_and_ends_the_session(services: Services) -> None:
    data = os.urandom(5_000)
    wrong = Digest.of(b"something else")

    async def scenario() -> None:
        session = services.uploads.begin("team/app")
        with pytest.raises(RegistryError) as refused:
            await services.uploads.complete("team/app", session, wrong, BytesBody(data))
        assert refused.value.code is ErrorCode.DIGEST_INVALID
        with pytest.raises(RegistryError) as gone:
            await services.uploads.size("team/app", session)
        assert gone.value.code is ErrorCode.BLOB_UPLOAD_UNKNOWN

    run(scenario())
    with pytest.raises(RegistryError):
        services.blobs.find("team/app", wrong)


def test_manifest_push_find_tag_and_delete(services: Services) -> None:
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(2_000)
    payload = image(config, layer)
    with pytest.raises(RegistryError) as missing:
        services.manifests.push("prod/web", "v1", payload, OCI_MANIFEST, ACTOR)
    assert missing.value.code is ErrorCode.MANIFEST_BLOB_UNKNOWN

    async def push_blobs() -> None:
        for blob in (config, layer):
            await services.uploads.push("prod/web", Digest.parse(sha256(blob)), BytesBody(blob))

    run(push_blobs())
    pushed = services.manifests.push("prod/web", "v1", payload, OCI_MANIFEST, ACTOR)
    assert str(pushed.digest) == sha256(payload) and pushed.subject is None
    assert services.manifests.find("prod/web", "v1").payload == payload
    assert services.manifests.find("prod/web", str(pushed.digest)).digest == sha256(payload)
    assert services.manifests.tags("prod/web", None, None) == ["v1"]
    with pytest.raises(RegistryError) as immutable:
        services.manifests.delete("prod/web", "v1", ACTOR)
    assert immutable.value.code is ErrorCode.DENIED and "immutable" in immutable.value.message
    services.manifests.push("prod/web", "latest", payload, OCI_MANIFEST, ACTOR)
    services.manifests.delete("prod/web", "latest", ACTOR)
    assert services.manifests.tags("prod/web", None, None) == ["v1"]
    with pytest.raises(RegistryError) as unknown:
        services.manifests.tags("prod/nothing", None, None)
    assert unknown.value.code is ErrorCode.NAME_UNKNOWN


def test_quota_refuses_before_any_bytes_and_mount_respects_it(services: Services) -> None:
    big = os.urandom(12 * 1024)

    async def scenario() -> None:
        await services.uploads.push("team/source", Digest.parse(sha256(big)), BytesBody(big))
        with pytest.raises(RegistryError) as refused:
            await services.uploads.push("small/one", Digest.parse(sha256(big)), BytesBody(big))
        assert refused.value.code is ErrorCode.DENIED and "quota" in refused.value.message
        with pytest.raises(RegistryError):
            services.uploads.mount("small/one", Digest.parse(sha256(big)), "team/source")
        assert services.uploads.mount("team/copy", Digest.parse(sha256(big)), "team/source")
        assert not services.uploads.mount("team/copy", Digest.of(b"not stored"), "team/source")

    run(scenario())
    assert services.blobs.find("team/copy", Digest.parse(sha256(big))).size == len(big)
