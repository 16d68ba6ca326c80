"""Reads scoped to the repository asked for, on the services with an in-memory registry:
a digest cached for one repository is checked upstream (one HEAD) for another, and
the answer remembered; a warm hit asks nothing."""

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
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.blobs import BlobService
from proxy.services.manifests import ManifestService
from testkit.memregistry import MemoryRegistry

A, B, C = (Repository(f"p/r/{n}", "us") for n in "abc")
DATA = b"layer bytes " * 1000
MANIFEST = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
OCI = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[BlobCache]:
    index = await CacheIndex.open(tmp_path / "index.sqlite3", ManualClock())
    blobs = BlobCache(BlobStore(tmp_path), index, max_size=1 << 30, fill_limit=60)
    try:
        yield blobs
    finally:
        await blobs.fills.aclose()
        await index.close()


async def test_a_blob_cached_for_one_repository_is_checked_once_for_another(
    cache: BlobCache,
) -> None:
    registry = MemoryRegistry()
    digest = registry.put_blob(DATA, A.path)
    registry.put_blob(DATA, B.path)
    blobs = BlobService(cache, registry, Metrics(), offline=False)
    body = (await blobs.get(A, digest, None)).body
    assert body is not None and not isinstance(body, bytes)
    assert b"".join([chunk async for chunk in body]) == DATA  # verified, so cached
    assert cache.size(digest) == len(DATA) and registry.calls["stat_blob"] == 0
    answers = await asyncio.gather(*[blobs.head(B, digest) for _ in range(5)])
    assert {a.size for a in answers} == {len(DATA)}  # concurrent checks share one HEAD
    for _ in range(3):  # B holds it: one HEAD, then remembered
        assert (await blobs.head(B, digest)).size == len(DATA)
        assert (await blobs.get(B, digest, None)).size == len(DATA)
    assert registry.calls["stat_blob"] == 1
    for _ in range(2):  # C does not: BLOB_UNKNOWN, as upstream answers (and remembered)
        with pytest.raises(RegistryError) as raised:
            await blobs.get(C, digest, None)
        assert raised.value.code is ErrorCode.BLOB_UNKNOWN
    assert registry.calls["open_blob"] == 1


async def test_offline_serves_only_what_is_known_for_the_repository(cache: BlobCache) -> None:
    registry = MemoryRegistry()
    digest = registry.put_manifest_bytes(MANIFEST, OCI, A.path)
    registry.put_manifest_bytes(MANIFEST, OCI, B.path)
    metrics, clock = Metrics(), ManualClock()

    def service(offline: bool) -> ManifestService:
        settings = CacheSettings(offline=offline)
        return ManifestService(settings, cache.index, cache, registry, metrics, clock)

    assert (await service(False).get(A, digest, (OCI,), head=False)).body == MANIFEST
    offline = service(True)
    assert (await offline.get(A, digest, (OCI,), head=True)).digest == digest
    with pytest.raises(RegistryError) as raised:
        await offline.get(B, digest, (OCI,), head=True)
    assert raised.value.code is ErrorCode.MANIFEST_UNKNOWN
    assert registry.calls["head_manifest"] == 0
    assert (await service(False).get(B, digest, (OCI,), head=True)).digest == digest
    assert registry.calls["head_manifest"] == 1
    assert (await offline.get(B, digest, (OCI,), head=True)).digest == digest  # now known


async def test_a_manifest_row_is_never_seen_before_its_repository_scope(
    cache: BlobCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that finds a just-fetched manifest's row while the fetch is still
    committing it (the flight is over for it, the scope must not be) is answered from
    the cache: no upstream HEAD to scope a digest the same repository just fetched."""
    registry = MemoryRegistry()
    digest = registry.put_manifest_bytes(MANIFEST, OCI, A.path)
    service = ManifestService(
        CacheSettings(), cache.index, cache, registry, Metrics(), ManualClock()
    )
    rows = cache.index.manifests
    real_put = rows.put
    followers: list[object] = []

    async def put_then_a_follower_asks(row, children=()):  # type: ignore[no-untyped-def]
        await real_put(row, children)
        # The row is visible, the fetch has not returned yet: a second client arrives.
        followers.append((await service.get(A, digest, (OCI,), head=False)).body)

    monkeypatch.setattr(rows, "put", put_then_a_follower_asks)
    assert (await service.get(A, digest, (OCI,), head=False)).body == MANIFEST
    assert followers == [MANIFEST]
    assert registry.calls["head_manifest"] == 0 and registry.calls["get_manifest"] == 1
