"""``cache.max_age``: blobs and manifests nobody read for that long leave the cache,
whatever its size, so a laptop does not keep last year's layers until it is full.

Pinned manifests (``warm --pin``), what they reference, and pinned blobs stay. Reads
are the batched access times of ``CacheIndex.touch`` (flushed first); a manifest never
read since it was stored counts from when it was stored.
"""

from __future__ import annotations

from proxy.cache.index import CacheIndex
from proxy.cache.rows import PINNED
from proxy.oci.digest import Digest


async def unread_blobs(index: CacheIndex, before: float) -> list[Digest]:
    await index.flush()
    async with index.db.execute(
        f"SELECT digest FROM blobs WHERE last_access < ? AND digest NOT IN ({PINNED})",
        (before,),
    ) as cursor:
        return [Digest.parse(digest) async for (digest,) in cursor]


async def unread_manifests(index: CacheIndex, before: float) -> list[Digest]:
    await index.flush()
    async with index.db.execute(
        "SELECT digest FROM manifests WHERE COALESCE(last_access, created) < ?"
        f" AND digest NOT IN ({PINNED})",
        (before,),
    ) as cursor:
        return [Digest.parse(digest) async for (digest,) in cursor]
