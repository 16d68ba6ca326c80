"""The revalidation task against an in-memory registry: a push through the proxy that
lands while a revalidation is out asking upstream wins over it (the tag is never
moved back), and a purge meanwhile is not undone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.store import BlobStore
from proxy.clock import ManualClock
from proxy.config import CacheSettings
from proxy.metrics import Metrics
from proxy.oci.digest import Digest
from proxy.oci.names import Repository
from proxy.services.manifests import ManifestService
from proxy.upstream.registry import ManifestInfo
from testkit.images import build_image, make_layer
from testkit.memregistry import MemoryRegistry

REPO = Repository("p/r/i", "us")
KEY = str(REPO)


class HeldHeads(MemoryRegistry):
    """HEADs wait for ``release`` once ``held`` is set: a revalidation caught in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def head_manifest(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...]
    ) -> ManifestInfo | None:
        answer = await super().head_manifest(repo, reference, accept)
        self.held.set()
        await self.release.wait()
        return answer


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[ManifestService, HeldHeads, ManualClock]]:
    clock = ManualClock()
    index = await CacheIndex.open(tmp_path / "index.sqlite3", clock)
    cache = BlobCache(BlobStore(tmp_path), index, max_size=1 << 30, fill_limit=60)
    registry = HeldHeads()
    settings = CacheSettings(tag_ttl=60.0)  # the default revalidate_window: background
    manifests = ManifestService(settings, index, cache, registry, Metrics(), clock)
    try:
        yield manifests, registry, clock
    finally:
        await manifests.tags.aclose()
        await index.close()


def _image(name: bytes) -> tuple[bytes, str]:
    image = build_image([make_layer({"f": name})])
    return image.manifest, image.media_type


async def test_a_push_during_a_revalidation_is_not_moved_back(
    service: tuple[ManifestService, HeldHeads, ManualClock],
) -> None:
    manifests, registry, clock = service
    old, moved, pushed = _image(b"old"), _image(b"moved"), _image(b"pushed")
    registry.put_manifest_bytes(*old, tag="1.0")
    registry.release.set()
    first = await manifests.get(REPO, "1.0", (), head=True)
    registry.release.clear()
    moved_digest = registry.put_manifest_bytes(*moved, tag="1.0")  # someone moved it upstream
    clock.advance(61)
    answer = await manifests.get(REPO, "1.0", (), head=True)  # starts the revalidation
    assert answer.digest == first.digest
    await registry.held.wait()  # its HEAD has the moved digest, not yet returned
    pushed_digest = Digest.of(pushed[0])  # a push through the proxy lands meanwhile
    await manifests.index.tags.put(KEY, "1.0", pushed_digest, pushed[1])
    registry.release.set()
    await manifests.tags.settle()
    tag = await manifests.index.tags.get(KEY, "1.0")
    assert tag is not None and tag.digest == pushed_digest  # not moved back to moved_digest
    assert registry.calls["get_manifest"] == 2  # the moved manifest was still fetched
    assert await manifests.cached(moved_digest) is not None


async def test_a_purge_during_a_revalidation_is_not_undone(
    service: tuple[ManifestService, HeldHeads, ManualClock],
) -> None:
    manifests, registry, clock = service
    registry.put_manifest_bytes(*_image(b"a"), tag="1.0")
    registry.release.set()
    await manifests.get(REPO, "1.0", (), head=True)
    registry.release.clear()
    registry.put_manifest_bytes(*_image(b"b"), tag="1.0")
    clock.advance(61)
    await manifests.get(REPO, "1.0", (), head=True)
    await registry.held.wait()
    await manifests.index.tags.delete(KEY, "1.0")  # what purge does (after waiting, normally)
    registry.release.set()
    await manifests.tags.settle()
    assert await manifests.index.tags.get(KEY, "1.0") is None
