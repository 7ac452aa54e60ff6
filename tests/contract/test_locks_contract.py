"""What the cross-process locks guarantee, on one machine (files) and in a fleet (PostgreSQL):
an exclusive holder is alone, a second try without waiting is told at once, shared holders
share, and a holder that dies (its process or connection gone) frees the lock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from cargohold.storage.locks import FileLocks, Locks, PostgresLocks


def test_an_exclusive_lock_is_held_alone(locks: Locks) -> None:
    with locks.exclusive("upload-" + "a" * 32, wait=False) as held:
        assert held
        other = threading.Thread(target=lambda: results.append(_try(locks, "upload-" + "a" * 32)))
        results: list[bool] = []
        other.start()
        other.join(timeout=30)
        assert results == [False], "a second holder is refused while the first holds it"
        assert _try(locks, "upload-" + "b" * 32), "another name is another lock"
    assert _try(locks, "upload-" + "a" * 32), "released on leaving"


def _try(locks: Locks, name: str) -> bool:
    with locks.exclusive(name, wait=False) as held:
        return held


def test_shared_holders_share_and_exclusive_waits_for_them(locks: Locks) -> None:
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def reader() -> None:
        with locks.shared("blobs-sha256-ab"):
            inside.set()
            release.wait(timeout=30)
            order.append("reader done")

    def collector() -> None:
        with locks.exclusive("blobs-sha256-ab"):
            order.append("collector in")

    first = threading.Thread(target=reader)
    first.start()
    assert inside.wait(timeout=30)
    with locks.shared("blobs-sha256-ab"):  # a second shared holder gets in beside the first
        order.append("second reader in")
    waiting = threading.Thread(target=collector)
    waiting.start()
    time.sleep(0.3)
    assert "collector in" not in order, "exclusive waits while a shared holder is inside"
    release.set()
    first.join(timeout=30)
    waiting.join(timeout=30)
    assert order == ["second reader in", "reader done", "collector in"]


def test_a_dead_holder_frees_the_lock(locks: Locks, tmp_path: Path) -> None:
    """The holder is another process, killed while it holds the lock."""
    if isinstance(locks, PostgresLocks):
        opener = f"PostgresLocks({locks.url!r})"
    else:
        assert isinstance(locks, FileLocks)
        opener = f"FileLocks(__import__('pathlib').Path({str(locks.directory)!r}))"
    script = (
        "import sys, time\n"
        "from cargohold.storage.locks import FileLocks, PostgresLocks\n"
        f"locks = {opener}\n"
        "with locks.exclusive('upload-' + 'c' * 32, wait=False) as held:\n"
        "    print(held, flush=True)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        assert not _try(locks, "upload-" + "c" * 32)
        holder.kill()
        holder.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not _try(locks, "upload-" + "c" * 32):
            assert time.monotonic() < deadline, "the lock outlived its holder"
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()
