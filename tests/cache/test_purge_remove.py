"""``BlobCache.remove`` (what ``purge --blobs`` uses) keeps eviction's rules: a blob
being filled or read is never removed, whatever ``pick`` chose; once nobody uses
it, it goes, and the cached total drops by its size."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.store import BlobStore
from proxy.clock import ManualClock
from proxy.oci.digest import Digest
from testkit.memregistry import MemoryStream


async def test_a_blob_being_filled_or_read_is_never_removed(tmp_path: Path) -> None:
    index = await CacheIndex.open(tmp_path / "index.sqlite3", ManualClock())
    cache = BlobCache(BlobStore(tmp_path), index, max_size=1 << 30, fill_limit=60)
    data = bytes(range(256)) * 1024
    digest = Digest.of(data)
    gate = asyncio.Event()  # holds the upstream body: the fill stays running

    async def opened() -> MemoryStream:
        return MemoryStream(data, gate=gate)

    async def pick() -> set[Digest]:
        return {digest}

    try:
        fill = cache.fill(digest, opened)
        assert await cache.remove(pick) == ([], 0)  # being filled
        gate.set()
        await fill.wait()
        body = cache.read(digest)  # a client reading it
        assert body is not None and cache.size(digest) == len(data)
        assert await cache.remove(pick) == ([], 0)  # being read
        body.close()
        assert await cache.remove(pick) == ([digest], len(data))
        assert cache.size(digest) is None and index.blobs.total_bytes == 0
        assert await index.blobs.size(digest) is None
    finally:
        await cache.fills.aclose()
        await index.close()
