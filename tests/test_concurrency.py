"""Concurrent writers and several worker processes must not corrupt the store."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.oci import sha256, with_query
from tests.support.servers import Cargohold
from tests.support.store import assert_store_consistent


@pytest.fixture
def two_workers(cargohold_with: Callable[[dict[str, str]], Cargohold]) -> Cargohold:
    return cargohold_with({"CARGOHOLD_WORKERS": "2"})


def test_same_blob_pushed_by_many_clients_at_once(fresh_cargohold: Cargohold) -> None:
    data = os.urandom(3 << 20)
    digest = sha256(data)

    def push(i: int) -> int:
        with httpx.Client(base_url=fresh_cargohold.url, timeout=60) as c:
            return c.post(f"/v2/same/r{i % 3}/blobs/uploads/", params={"digest": digest}, content=data).status_code

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(push, range(12))) == [201] * 12
    with httpx.Client(base_url=fresh_cargohold.url) as c:
        for i in range(3):
            assert c.get(f"/v2/same/r{i}/blobs/{digest}").content == data
    assert_store_consistent(fresh_cargohold.data)


def test_chunks_spread_over_worker_processes(two_workers: Cargohold) -> None:
    """Every request on a fresh connection, so chunks of one upload land on either process,
    which must rebuild the running hash from the file when another process wrote last."""
    blobs = [os.urandom(4 * 300_000 + i) for i in range(12)]

    def upload(data: bytes) -> str:
        repo = f"spread/r{len(data)}"
        location = httpx.post(f"{two_workers.url}/v2/{repo}/blobs/uploads/").headers["location"]
        for start in range(0, len(data), 300_000):
            piece = data[start : start + 300_000]
            response = httpx.patch(
                two_workers.url + location,
                content=piece,
                headers={"content-range": f"{start}-{start + len(piece) - 1}"},
            )
            assert response.status_code == 202, response.text
            location = response.headers["location"]
        done = httpx.put(two_workers.url + with_query(location, digest=sha256(data)))
        assert done.status_code == 201, done.text
        return httpx.get(f"{two_workers.url}/v2/{repo}/blobs/{sha256(data)}").content == data

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(upload, blobs))
    patch_pids = {
        line.split("access[")[1].split("]")[0] for line in two_workers.log_text().splitlines() if '"PATCH ' in line
    }
    assert len(patch_pids) == 2, "both worker processes should have taken chunks"
    assert_store_consistent(two_workers.data)


def test_concurrent_patches_on_one_session_take_turns(fresh_cargohold: Cargohold) -> None:
    """Two PATCHes racing for the same offset: exactly one wins, and the blob is intact."""
    first, second = os.urandom(2 << 20), os.urandom(2 << 20)
    with httpx.Client(base_url=fresh_cargohold.url, timeout=60) as c:
        location = c.post("/v2/race/patch/blobs/uploads/").headers["location"]

    def patch(body: bytes) -> int:
        with httpx.Client(base_url=fresh_cargohold.url, timeout=60) as c:
            return c.patch(location, content=body, headers={"content-range": f"0-{len(body) - 1}"}).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(patch, [first, second]))
    assert statuses == [202, 416]
    with httpx.Client(base_url=fresh_cargohold.url, timeout=60) as c:
        assert c.get(location).headers["range"] == f"0-{(2 << 20) - 1}"
        kept = (fresh_cargohold.data / "uploads" / location.rsplit("/", 1)[1]).read_bytes()
        assert kept in (first, second), "the session holds one whole chunk, never a mix"
        assert c.put(with_query(location, digest=sha256(kept))).status_code == 201
        assert c.get(f"/v2/race/patch/blobs/{sha256(kept)}").content == kept
    assert_store_consistent(fresh_cargohold.data)
