"""A fill writes and hashes on a worker thread: followers see only bytes already in the
file, and a fill that times out mid-batch waits for the thread before closing it."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from proxy.cache import fillwriter
from proxy.cache.fills import CHUNK, Fill
from proxy.oci.digest import Digest
from proxy.upstream.registry import BlobStream


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes], pause: float = 0.0) -> None:
        self.pieces, self.pause = pieces, pause

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(self.pause)
            yield piece


def _fill(tmp_path: Path, data: bytes) -> Fill:
    return Fill(Digest.of(data), tmp_path / "temp", tmp_path / "final")


async def _commit(temp: Path, digest: Digest, size: int) -> None:
    await asyncio.to_thread(temp.rename, temp.with_name("final"))


async def test_followers_read_exactly_the_bytes_of_uneven_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_absorb = fillwriter._store_batch

    def slow_disk(file: BinaryIO, pieces: list[bytes]) -> None:
        time.sleep(0.05)  # followers catch up with what was counted before this batch
        real_absorb(file, pieces)

    monkeypatch.setattr(fillwriter, "_store_batch", slow_disk)
    data = random.Random(3).randbytes(3 * CHUNK + 5000)
    # Pieces smaller than a file buffer and bigger than a batch; a small one ends a
    # batch, small ones end the blob.
    end = len(data)
    cuts = [0, 7, 4096, CHUNK - 5, CHUNK + 5, 2 * CHUNK + 3, end - 300, end - 100, end]
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)]
    fill = _fill(tmp_path, data)

    async def opened() -> BlobStream:
        headers = {"content-length": str(len(data))}
        return BlobStream(httpx.Response(200, headers=headers, stream=Pieces(pieces, pause=0.001)))

    run = asyncio.create_task(fill.run(opened, _commit, 30))
    followed = bytearray()
    async for fd, offset, count in fill.segments():
        assert offset == len(followed)
        chunk = os.pread(fd, count, offset)
        assert len(chunk) == count, f"a short read at {offset}: counted bytes not in the file"
        followed += chunk
    await run
    assert fill.done and not fill.failed
    assert followed == data


async def test_a_fill_cut_mid_batch_waits_for_its_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(4).randbytes(2 * CHUNK)
    writer_errors: list[BaseException] = []
    writing, written = threading.Event(), threading.Event()
    real_absorb = fillwriter._store_batch

    def slow_absorb(file: BinaryIO, pieces: list[bytes]) -> None:
        writing.set()
        time.sleep(0.3)  # still writing when the fill's time runs out
        try:
            real_absorb(file, pieces)
        except BaseException as error:
            writer_errors.append(error)
            raise
        finally:
            written.set()

    monkeypatch.setattr(fillwriter, "_store_batch", slow_absorb)
    fill = _fill(tmp_path, data)

    async def opened() -> BlobStream:
        return BlobStream(httpx.Response(200, stream=Pieces([data[:CHUNK], data[CHUNK:]])))

    await fill.run(opened, _commit, 0.1)
    assert writing.is_set()
    assert await asyncio.to_thread(written.wait, 5)
    assert fill.error is not None and fill.error.status == 504
    assert writer_errors == []  # the file was not closed under the thread
    assert not fill.temp.exists()


async def test_followers_read_written_batches_while_the_hash_lags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write and hash are separate in-order stages: a hash that falls behind holds back
    only the last byte (verification), not the bytes already in the file."""
    data = random.Random(5).randbytes(4 * CHUNK)
    release = threading.Event()
    real_hash = fillwriter._hash

    def stuck_hash(verifier: object, pieces: list[bytes]) -> None:
        assert release.wait(10), "the test never released the hash"
        real_hash(verifier, pieces)  # type: ignore[arg-type]

    monkeypatch.setattr(fillwriter, "_hash", stuck_hash)
    monkeypatch.setattr(fillwriter, "DEEP_FROM", 0)  # a large blob's lead, on a small one
    fill = _fill(tmp_path, data)
    pieces = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]

    async def opened() -> BlobStream:
        headers = {"content-length": str(len(data))}
        return BlobStream(httpx.Response(200, headers=headers, stream=Pieces(pieces)))

    run = asyncio.create_task(fill.run(opened, _commit, 30))
    followed = bytearray()
    segments = fill.segments()
    async for fd, offset, count in segments:
        followed += os.pread(fd, count, offset)
        if len(followed) >= fillwriter.DEPTH * CHUNK:
            break  # more than a batch in, while no batch has been hashed
    assert not release.is_set() and not fill.done
    release.set()
    async for fd, offset, count in segments:
        followed += os.pread(fd, count, offset)
    await run
    assert fill.done and followed == data


async def test_a_failed_write_stops_the_fill_and_nothing_after_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(6).randbytes(4 * CHUNK)
    calls: list[int] = []
    real_absorb = fillwriter._store_batch

    def failing_second(file: BinaryIO, pieces: list[bytes]) -> None:
        calls.append(sum(len(p) for p in pieces))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_absorb(file, pieces)

    monkeypatch.setattr(fillwriter, "_store_batch", failing_second)
    fill = _fill(tmp_path, data)
    pieces = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]

    async def opened() -> BlobStream:
        return BlobStream(httpx.Response(200, stream=Pieces(pieces)))

    await fill.run(opened, _commit, 30)
    assert fill.failed and not fill.done
    assert len(calls) == 2  # the stage stopped at its failure: no write after it
    assert fill.written == CHUNK
    assert not fill.temp.exists() and not (tmp_path / "final").exists()


async def test_the_first_piece_reaches_followers_before_a_batch_is_full(tmp_path: Path) -> None:
    """The first bytes go to the file at once (time to first byte), later ones in
    batches of at least CHUNK."""
    data = random.Random(7).randbytes(CHUNK + 1000)
    more = asyncio.Event()

    class Held(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield data[:1000]
            await more.wait()  # upstream is slow after its first bytes
            yield data[1000:]

    fill = _fill(tmp_path, data)

    async def opened() -> BlobStream:
        headers = {"content-length": str(len(data))}
        return BlobStream(httpx.Response(200, headers=headers, stream=Held()))

    run = asyncio.create_task(fill.run(opened, _commit, 30))
    segments = fill.segments()
    fd, offset, count = await asyncio.wait_for(anext(segments), 10)
    assert (offset, os.pread(fd, count, offset)) == (0, data[:1000])
    assert not more.is_set()
    more.set()
    followed = bytearray(data[:1000])
    async for fd, offset, count in segments:
        followed += os.pread(fd, count, offset)
    await run
    assert fill.done and followed == data
