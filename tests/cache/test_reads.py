"""BlobCache.read, iterated as bytes, serves the same bytes whether the page cache has
them (read on the event loop) or not (read on a thread), whole or as a range."""

from __future__ import annotations

import errno
import gc
import os
import random
from pathlib import Path

import pytest

from proxy.cache import bodies, pagecache
from proxy.cache.blobs import READ_SIZE, BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.store import BlobStore
from proxy.oci.digest import Digest


@pytest.mark.parametrize("cached", [True, False], ids=["page-cache-hit", "miss"])
async def test_reads_return_the_bytes_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    monkeypatch.setattr(bodies, "in_page_cache", lambda fd, offset: cached)
    data = random.Random(7).randbytes(3 * READ_SIZE + 123)
    digest = Digest.of(data)
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    cache = BlobCache(BlobStore(tmp_path), index, max_size=1 << 30, fill_limit=60)
    try:
        temp = cache.store.new_temp()
        temp.write_bytes(data)
        cache.store.commit(temp, digest)
        body, window = cache.read(digest), cache.read(digest, 100, READ_SIZE + 200)
        assert body is not None and window is not None
        whole = [chunk async for chunk in body]
        part = b"".join([chunk async for chunk in window])
    finally:
        await index.close()
    assert b"".join(whole) == data
    assert max(len(chunk) for chunk in whole) == READ_SIZE
    assert part == data[100 : READ_SIZE + 200]
    assert not cache.in_use(digest)


def test_the_probe_sees_a_file_just_written(tmp_path: Path) -> None:
    if pagecache._NOWAIT is None:
        pytest.skip("no RWF_NOWAIT here: every read goes to a thread")
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 8192)
    with path.open("rb") as file:
        try:
            os.preadv(file.fileno(), [bytearray(1)], 0, pagecache._NOWAIT)
        except OSError as error:
            if error.errno == errno.EOPNOTSUPP:
                pytest.skip(f"{tmp_path} is on a filesystem without RWF_NOWAIT reads")
        assert pagecache.in_page_cache(file.fileno(), 4096)


async def _cache_with(tmp_path: Path, data: bytes) -> tuple[BlobCache, CacheIndex, Digest]:
    digest = Digest.of(data)
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    cache = BlobCache(BlobStore(tmp_path), index, max_size=1 << 30, fill_limit=60)
    temp = cache.store.new_temp()
    temp.write_bytes(data)
    cache.store.commit(temp, digest)
    await index.blobs.add(digest, len(data))
    return cache, index, digest


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_body_holds_its_blob_against_eviction_and_gc_until_read(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(READ_SIZE + 5)
    cache, index, digest = await _cache_with(tmp_path, data)
    try:
        body = cache.read(digest)  # what a hit's answer holds while headers go out
        assert body is not None and cache.in_use(digest)
        assert await cache.evict(target=0) == (0, 0)  # in use: not evicted
        cache.store.path(digest).unlink()  # `gar-proxy gc` in another process
        assert b"".join([chunk async for chunk in body]) == data  # the open file still reads
        assert not cache.in_use(digest)
        assert cache.read(digest) is None  # gone now: a miss, typed
        assert not cache.in_use(digest)
    finally:
        await index.close()


async def test_a_body_never_read_is_released_when_dropped(tmp_path: Path) -> None:
    cache, index, digest = await _cache_with(tmp_path, b"x" * 1000)
    try:
        before = _open_fds()
        body = cache.read(digest)
        assert _open_fds() == before + 1 and cache.in_use(digest)
        del body
        gc.collect()
        assert _open_fds() == before and not cache.in_use(digest)
        closed = cache.read(digest)
        assert closed is not None
        closed.close()
        closed.close()  # once only
        assert _open_fds() == before and not cache.in_use(digest)
    finally:
        await index.close()
