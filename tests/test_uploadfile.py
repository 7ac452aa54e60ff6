"""Appending to upload files: direct writes through shared stages, unaligned heads and tails."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cargohold.storage import uploadfile
from cargohold.storage.uploadfile import UploadWriter

STAGE = uploadfile._STAGE
SIZES = [1, 511, 4095, 4096, 4097, 65_536, STAGE - 1, STAGE, STAGE + 1, 2 * STAGE + 4_099]


def append_in_sessions(path: Path, seed: int, sessions: int) -> bytes:
    """Several writers in turn, as PATCH requests are, each appending a few parts; returns what was sent."""
    rng = random.Random(seed)
    sent = bytearray()
    path.write_bytes(b"")
    for _ in range(sessions):
        writer = UploadWriter(path, fsync=False)
        assert writer.size == len(sent)
        for _ in range(rng.randint(1, 4)):
            parts = [rng.randbytes(rng.choice(SIZES)) for _ in range(rng.randint(1, 3))]
            writer.write_parts(parts)
            sent += b"".join(parts)
            assert writer.size == len(sent)
        writer.close()
        assert path.stat().st_size == len(sent)
    return bytes(sent)


@pytest.mark.parametrize("seed", range(4))
def test_appends_across_sessions_land_in_order(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "upload"
    assert append_in_sessions(path, seed, sessions=6) == path.read_bytes()


def test_without_direct_io_every_byte_still_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tmpfs and some network filesystems refuse O_DIRECT: the writer falls back to plain writes.
    monkeypatch.setattr(uploadfile, "_open_direct", lambda path: -1)
    path = tmp_path / "upload"
    assert append_in_sessions(path, seed=9, sessions=3) == path.read_bytes()


def test_the_unaligned_tail_is_counted_and_written_on_sync(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"")
    writer = UploadWriter(path, fsync=True)
    writer.write_parts([b"a" * (3 * 4096 + 10)])
    assert writer.size == 3 * 4096 + 10
    assert path.stat().st_size == 3 * 4096  # whole blocks only, so far
    writer.sync()
    assert path.read_bytes() == b"a" * (3 * 4096 + 10)
    writer.close()


def test_truncate_drops_the_tail_too(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"")
    writer = UploadWriter(path, fsync=False)
    writer.write_parts([b"k" * 8192])
    writer.write_parts([b"x" * 5000])
    writer.truncate(8192)
    assert writer.size == 8192
    writer.write_parts([b"y" * 3])
    writer.close()
    assert path.read_bytes() == b"k" * 8192 + b"yyy"


def test_stages_are_reused_not_made_per_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    original = uploadfile.mmap.mmap

    def counting_mmap(*args: object, **kwargs: object) -> object:
        made.append(args)
        return original(*args, **kwargs)

    stages = uploadfile._Stages(STAGE, keep=2)
    first = stages.take()
    stages.give_back(first)
    assert stages.take() is first  # the same pages again: nothing new to fault in
    stages.give_back(first)

    path = tmp_path / "upload"
    path.write_bytes(b"")
    monkeypatch.setattr(uploadfile.mmap, "mmap", counting_mmap)
    for _ in range(3):  # three requests in a row, each with several writes
        writer = UploadWriter(path, fsync=False)
        for _ in range(4):
            writer.write_parts([random.randbytes(STAGE + 100)])
        writer.close()
    assert len(made) <= 1, "every write made a new staging buffer"
