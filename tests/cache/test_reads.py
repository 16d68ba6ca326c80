"""BlobCache.read, iterated as bytes, serves the same bytes whether the page cache has
them (read on the event loop) or not (read on a thread), whole or as a range."""

from __future__ import annotations

import errno
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
        whole = [chunk async for chunk in cache.read(digest)]
        part = b"".join([chunk async for chunk in cache.read(digest, 100, READ_SIZE + 200)])
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
