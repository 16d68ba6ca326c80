"""The shared tier in the blob service, in memory: concurrent readers of a bucket copy
share one read of it, and when the copy is bad every one of them still gets GAR's
bytes (one GAR fetch), and GAR's copy is written over the bad one."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.shared import SharedTier
from proxy.cache.store import BlobStore
from proxy.clock import ManualClock
from proxy.config.values import SharedBucket
from proxy.metrics import Metrics
from proxy.oci.digest import Digest
from proxy.oci.names import Repository
from proxy.services.answers import Answer
from proxy.services.blobs import BlobService
from testkit.memregistry import MemoryRegistry, MemoryStream

REPO = Repository("p/r/i", "us")
WHERE = SharedBucket("team-cache", "gp")


class MemoryBucket:
    """Objects by name; ``gate`` holds reads so that readers pile up on one fill."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls: Counter[str] = Counter()
        self.gate = asyncio.Event()

    async def open(self, name: str) -> MemoryStream | None:
        self.calls["open"] += 1
        data = self.objects.get(name)
        return None if data is None else MemoryStream(data, gate=self.gate)

    async def upload(self, name: str, path: Path) -> None:
        self.calls["upload"] += 1
        self.objects[name] = await asyncio.to_thread(path.read_bytes)


class World:
    def __init__(self, tmp_path: Path, index: CacheIndex) -> None:
        store = BlobStore(tmp_path)
        self.cache = BlobCache(store, index, max_size=1 << 30, fill_limit=60)
        self.registry, self.bucket, self.events = MemoryRegistry(), MemoryBucket(), Counter[str]()
        self.shared = SharedTier(self.bucket, WHERE, store, lambda e: self.events.update([e]))
        self.blobs = BlobService(
            self.cache, self.registry, Metrics(), offline=False, shared=self.shared
        )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    index = await CacheIndex.open(tmp_path / "index.sqlite3", ManualClock())
    made = World(tmp_path, index)
    try:
        yield made
    finally:
        await made.cache.fills.aclose()
        await made.shared.aclose()
        await index.close()


async def body_of(answer: Answer) -> bytes:
    assert answer.body is not None and not isinstance(answer.body, bytes)
    return b"".join([chunk async for chunk in answer.body])


async def ten_reads(world: World, digest: Digest) -> list[bytes]:
    await world.cache.index.scopes.add(str(REPO), digest)  # the image's manifest said so
    answers = [asyncio.create_task(world.blobs.get(REPO, digest, None)) for _ in range(10)]
    await asyncio.sleep(0.01)
    world.bucket.gate.set()
    return list(await asyncio.gather(*[body_of(await a) for a in answers]))


async def test_ten_readers_of_a_bucket_copy_share_one_read_and_gar_sees_none(
    world: World,
) -> None:
    data = bytes(range(256)) * 4096
    digest = world.registry.put_blob(data)
    world.bucket.objects[world.shared.name(digest)] = data
    assert await ten_reads(world, digest) == [data] * 10
    assert world.bucket.calls["open"] == 1 and world.registry.calls["open_blob"] == 0
    assert world.events == {"hit": 1}
    await world.shared.drain(5)
    assert world.bucket.calls["upload"] == 0


@pytest.mark.parametrize("bad", ["flipped", "short"])
async def test_ten_readers_of_a_bad_bucket_copy_all_get_gars_bytes(world: World, bad: str) -> None:
    data = bytes(range(256)) * 4096
    digest = world.registry.put_blob(data)
    name = world.shared.name(digest)
    world.bucket.objects[name] = data[:-1] + b"!" if bad == "flipped" else data[:-100]
    assert await ten_reads(world, digest) == [data] * 10
    assert world.registry.calls["open_blob"] == 1  # one GAR fetch for all ten
    await world.shared.drain(5)
    assert world.bucket.objects[name] == data  # GAR's copy replaced the bad one
    assert world.events == {"hit": 1, "corrupt": 1, "uploaded": 1}
