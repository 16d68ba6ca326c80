"""The services against an in-memory registry that counts calls: no sockets, no HTTP.

What reached "upstream" is read off ``MemoryRegistry.calls``; time is a ``ManualClock``.
The end-to-end tests (tests/test_pull_*.py, tests/test_push*.py) cover the same
behaviour through uvicorn and the fake GAR.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.upload_store import UploadFiles, UploadTable
from proxy.clock import ManualClock
from proxy.config import CacheSettings, ServerSettings
from proxy.metrics import Metrics
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.answers import Answer
from proxy.services.blob_uploads import UploadService
from proxy.services.blobs import BlobService
from proxy.services.manifest_writes import ManifestWriteService
from proxy.services.manifests import ManifestService
from proxy.services.mounts import MountService
from proxy.services.upload_session import Chunk
from testkit.images import build_image, make_layer
from testkit.memregistry import MemoryRegistry

REPO = Repository("p/r/i", "us")
OWNER = "anonymous"
OUTAGE = RegistryError(ErrorCode.UPSTREAM_BAD_GATEWAY, "upstream failed with HTTP 503")


class World:
    def __init__(self, cache: BlobCache, index: CacheIndex, clock: ManualClock) -> None:
        self.cache, self.index, self.clock = cache, index, clock
        self.registry = MemoryRegistry()
        self.metrics = Metrics()
        self.blobs = BlobService(cache, self.registry, self.metrics, offline=False)

    def manifests(self, **settings: float) -> ManifestService:
        settings.setdefault("revalidate_window", 0.0)  # wait for revalidations
        group = CacheSettings(**settings)  # type: ignore[arg-type]
        return ManifestService(
            group, self.index, self.cache, self.registry, self.metrics, self.clock
        )

    def uploads(self, tmp_path: Path) -> UploadService:
        table, files = UploadTable(self.index.db), UploadFiles(tmp_path)
        return UploadService(self.registry, self.cache, table, files, self.clock)


async def body_of(answer: Answer) -> bytes:
    if isinstance(answer.body, bytes):
        return answer.body
    assert answer.body is not None
    return b"".join([chunk async for chunk in answer.body])


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# --------------------------------------------------------------------------- blobs


async def test_concurrent_cold_reads_make_one_upstream_fetch(world: World) -> None:
    data = bytes(range(256)) * 4096
    digest = world.registry.put_blob(data)
    world.registry.gate = asyncio.Event()  # hold the fill so that all ten join it
    answers = [asyncio.create_task(world.blobs.get(REPO, digest, None)) for _ in range(10)]
    await asyncio.sleep(0)
    world.registry.gate.set()
    bodies = await asyncio.gather(*[body_of(await a) for a in answers])
    assert bodies == [data] * 10
    assert world.registry.calls["open_blob"] == 1
    hit = await world.blobs.get(REPO, digest, None)
    assert await body_of(hit) == data and world.registry.calls["open_blob"] == 1
    head = await world.blobs.head(REPO, digest)
    assert head.size == len(data) and world.registry.calls["stat_blob"] == 0


async def test_an_unknown_blob_is_blob_unknown_and_nothing_is_cached(world: World) -> None:
    missing = Digest.of(b"nowhere")
    with pytest.raises(RegistryError) as raised:
        await world.blobs.head(REPO, missing)
    assert raised.value.code is ErrorCode.BLOB_UNKNOWN
    with pytest.raises(RegistryError) as raised:
        await world.blobs.get(REPO, missing, None)
    assert raised.value.code is ErrorCode.BLOB_UNKNOWN
    assert world.cache.size(missing) is None
    assert dict(world.registry.calls) == {"stat_blob": 1, "open_blob": 1}


# --------------------------------------------------------------------------- manifests


async def test_tags_follow_ttl_then_one_head_then_stale_within_recheck(world: World) -> None:
    image = build_image([make_layer({"f": b"1"})])
    world.registry.put_manifest_bytes(image.manifest, image.media_type, "p/r/i", "1.0")
    manifests = world.manifests(tag_ttl=60.0, max_stale=3600.0, stale_recheck=10.0)
    first = await manifests.get(REPO, "1.0", (), head=False)
    assert await body_of(first) == image.manifest
    world.clock.advance(59)
    await manifests.get(REPO, "1.0", (), head=True)
    assert dict(world.registry.calls) == {"get_manifest": 1}
    world.clock.advance(2)  # expired: one HEAD revalidates, no GET
    await manifests.get(REPO, "1.0", (), head=True)
    assert world.registry.calls["head_manifest"] == 1 and world.registry.calls["get_manifest"] == 1
    world.clock.advance(61)
    world.registry.fail("head_manifest", OUTAGE)
    for _ in range(3):  # served stale; upstream asked once, not again within stale_recheck
        stale = await manifests.get(REPO, "1.0", (), head=False)
        assert await body_of(stale) == image.manifest
    assert world.registry.calls["head_manifest"] == 2
    assert world.metrics.registry.get_sample_value("garproxy_stale_tags_served_total") == 3
    world.clock.advance(10.5)
    await manifests.get(REPO, "1.0", (), head=True)
    assert world.registry.calls["head_manifest"] == 3


async def test_a_tag_gone_upstream_is_dropped_and_its_digest_kept(world: World) -> None:
    image = build_image([make_layer({"f": b"2"})])
    world.registry.put_manifest_bytes(image.manifest, image.media_type, "p/r/i", "1.0")
    manifests = world.manifests(tag_ttl=0.0)
    await manifests.get(REPO, "1.0", (), head=True)
    del world.registry.tag_map["p/r/i:1.0"]
    with pytest.raises(RegistryError) as raised:
        await manifests.get(REPO, "1.0", (), head=True)
    assert raised.value.code is ErrorCode.MANIFEST_UNKNOWN
    assert await world.index.tags.get(str(REPO), "1.0") is None
    by_digest = await manifests.get(REPO, Digest.parse(image.digest), (), head=False)
    assert await body_of(by_digest) == image.manifest
    assert world.registry.calls["get_manifest"] == 1


async def test_a_manifest_that_does_not_match_its_digest_is_not_cached(world: World) -> None:
    image = build_image([make_layer({"f": b"3"})])
    digest = Digest.parse(image.digest)
    world.registry.manifests[f"p/r/i@{digest}"] = (image.media_type, image.manifest + b" ")
    with pytest.raises(RegistryError) as raised:
        await world.manifests().get(REPO, digest, (), head=False)
    assert raised.value.code is ErrorCode.UPSTREAM_CORRUPT and raised.value.status == 502
    assert await world.index.manifests.get(digest) is None


# --------------------------------------------------------------------------- pushes


async def test_a_monolithic_upload_lands_upstream_and_in_the_cache(
    world: World, tmp_path: Path
) -> None:
    data = b"pushed layer" * 1000
    digest = Digest.of(data)
    uploads = world.uploads(tmp_path)
    await uploads.monolithic(REPO, digest, Chunk(once(data), len(data)), owner=OWNER)
    assert world.registry.blobs[f"p/r/i@{digest}"] == data
    assert world.cache.size(digest) == len(data)
    calls = dict(world.registry.calls)
    assert calls == {"start_upload": 1, "commit_upload": 1}
    assert world.registry.writes == 1  # one write, as GAR takes it


async def test_a_manifest_put_naming_a_missing_blob_never_reaches_upstream(
    world: World, tmp_path: Path
) -> None:
    image = build_image([make_layer({"f": b"4"})])
    for blob in image.blobs[:-1]:  # the last layer is missing upstream and here
        world.registry.put_blob(blob.data)
    uploads = world.uploads(tmp_path)
    mounts = MountService(
        world.registry, world.cache, world.blobs, uploads, gar=True, offline=False
    )
    writes = ManifestWriteService(ServerSettings(), world.index, world.registry, mounts)
    with pytest.raises(RegistryError) as raised:
        await writes.put(REPO, "1.0", image.media_type, image.manifest)
    assert raised.value.code is ErrorCode.MANIFEST_BLOB_UNKNOWN
    assert raised.value.detail == {"digest": image.blobs[-1].digest}
    assert world.registry.calls["put_manifest"] == 0
    world.registry.put_blob(image.blobs[-1].data)
    pushed = await writes.put(REPO, "1.0", image.media_type, image.manifest)
    assert str(pushed.digest) == image.digest and world.registry.calls["put_manifest"] == 1
    assert world.registry.tag_map["p/r/i:1.0"] == image.digest
    assert image.media_type == mt.OCI_MANIFEST


class CanonicalisingRegistry(MemoryRegistry):
    """An upstream that stores every blob under its sha256, whatever digest it was given."""

    def stored_as(self, data: bytes, digest: Digest) -> Digest:
        return Digest.of(data)


async def test_a_blob_upstream_stored_under_another_digest_is_an_error_not_a_201(
    world: World, tmp_path: Path
) -> None:
    registry = world.registry = CanonicalisingRegistry()
    table, files = UploadTable(world.index.db), UploadFiles(tmp_path)
    uploads = UploadService(registry, world.cache, table, files, world.clock)
    data = b"a sha512 layer" * 100
    asked = Digest.of(data, "sha512")
    with pytest.raises(RegistryError) as raised:
        await uploads.monolithic(REPO, asked, Chunk(once(data), len(data)), owner=OWNER)
    assert raised.value.code is ErrorCode.UPSTREAM_CORRUPT
    assert str(Digest.of(data)) in raised.value.message
    assert world.cache.size(asked) is None  # not cached as if it had landed
    assert registry.calls["stat_blob"] == 1  # asked whether the named digest exists after all
    same = b"a sha256 layer"
    await uploads.monolithic(
        REPO, Digest.of(same), Chunk(once(same), len(same)), owner=OWNER
    )  # agrees: fine


async def test_a_manifest_naming_thousands_of_missing_layers_stops_at_the_first_few(
    world: World, tmp_path: Path
) -> None:
    layers = [
        {"mediaType": mt.OCTET_STREAM, "digest": str(Digest.of(str(n).encode())), "size": 1}
        for n in range(3000)
    ]
    config = {"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(b"c")), "size": 1}
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": layers}
    ).encode()
    uploads = world.uploads(tmp_path)
    mounts = MountService(
        world.registry, world.cache, world.blobs, uploads, gar=True, offline=False
    )
    writes = ManifestWriteService(ServerSettings(), world.index, world.registry, mounts)
    with pytest.raises(RegistryError) as raised:
        await writes.put(REPO, "big", mt.OCI_MANIFEST, body)
    assert raised.value.code is ErrorCode.MANIFEST_BLOB_UNKNOWN
    assert "stopped looking" in raised.value.message
    assert world.registry.calls["stat_blob"] <= 2 * ServerSettings().push_concurrency
    assert world.registry.calls["put_manifest"] == 0
