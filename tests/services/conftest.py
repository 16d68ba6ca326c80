"""The services over a real index and blob store in ``tmp_path``, upstream in memory
(``World``, in ``test_in_memory``): the ``world`` fixture the service tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.store import BlobStore
from proxy.clock import ManualClock
from tests.services.test_in_memory import World


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock()
    index = await CacheIndex.open(tmp_path / "index.sqlite3", clock)
    cache = BlobCache(BlobStore(tmp_path), index, max_size=1 << 30, fill_limit=60)
    try:
        yield World(cache, index, clock)
    finally:
        await cache.fills.aclose()
        await index.close()
