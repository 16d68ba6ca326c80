"""BlobCache.evict against a real index and store, with fills landing mid-eviction."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.store import BlobStore
from proxy.oci.digest import Digest


async def _add(cache: BlobCache, data: bytes) -> Digest:
    digest = Digest.of(data)
    temp = cache.store.new_temp()
    temp.write_bytes(data)
    cache.store.commit(temp, digest)
    await cache.index.blobs.add(digest, len(data))
    return digest


async def test_a_fill_committed_during_eviction_does_not_stall_it(tmp_path: Path) -> None:
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    cache = BlobCache(BlobStore(tmp_path), index, max_size=3000, fill_limit=60)
    try:
        for n in range(4):
            await _add(cache, bytes([n]) * 1000)
        remove = index.blobs.remove
        landed: list[Digest] = []

        async def remove_while_a_fill_lands(digests):  # type: ignore[no-untyped-def]
            await remove(digests)
            if not landed:  # another fill commits while eviction is under way
                landed.append(await _add(cache, b"late" * 250))

        index.blobs.remove = remove_while_a_fill_lands  # type: ignore[method-assign]
        removed, freed = await asyncio.wait_for(cache.evict(), timeout=5)
        assert index.blobs.total_bytes <= 3000
        assert (removed, freed) == (2, 2000)
        assert cache.size(landed[0]) == 1000  # the newest stays
    finally:
        await index.close()
