"""A full cache disk never cuts a 200: a blob that cannot be cached is passed through
to the client uncached; an ENOSPC mid-fill fails only that fill; space returning
brings caching back. Free space is injected (``BlobCache.free_bytes``), not made."""

from __future__ import annotations

import errno
import random
from typing import BinaryIO

import httpx
import pytest

from proxy.cache import fillwriter
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory
from tests.test_eviction import cached, eventually

REPO = "proj/repo/app"
MIB = 1 << 20


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none", chunk_size=256 * 1024)


def passed_through(proxy: RunningProxy) -> float:
    value = proxy.services.metrics.registry.get_sample_value(
        "garproxy_cache_lookups_total", {"kind": "blob", "outcome": "passthrough"}
    )
    return value or 0.0


def test_a_blob_larger_than_the_free_space_is_passed_through(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    data = random.Random(1).randbytes(3 * MIB)
    digest = fake.put_blob("us", REPO, data)
    running = proxy(fake.upstream, cache__min_free="1MiB")
    cache = running.services.cache
    cache.free_bytes = lambda: 2 * MIB  # 1 MiB over the floor: a 3 MiB blob cannot fit
    with httpx.Client(base_url=running.url, timeout=30) as client:
        answer = client.get(f"/v2/{REPO}/blobs/{digest}")
        assert answer.status_code == 200
        assert answer.content == data
        assert answer.headers["content-length"] == str(len(data))
        assert str(Digest.of(answer.content)) == digest
        assert cached(running) == set()
        assert running.services.index.blobs.total_bytes == 0
        assert passed_through(running) == 1

        cache.free_bytes = lambda: 100 * MIB  # space is back: the next pull caches it
        assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data
        eventually(lambda: cached(running) == {digest}, "the blob is cached")
    assert passed_through(running) == 1


def test_a_fill_makes_room_by_evicting_least_recently_used(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    blobs = {n: random.Random(n).randbytes(MIB) for n in "ab"}
    digests = {n: fake.put_blob("us", REPO, d) for n, d in blobs.items()}
    running = proxy(fake.upstream, cache__min_free="1MiB")
    cache = running.services.cache
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get(f"/v2/{REPO}/blobs/{digests['a']}").content == blobs["a"]
        eventually(lambda: cached(running) == {digests["a"]}, "a is cached")
        # 0.5 MiB over the floor: "b" fits only once "a" has gone (its 1 MiB freed).
        cache.free_bytes = lambda: MIB + MIB // 2
        assert client.get(f"/v2/{REPO}/blobs/{digests['b']}").content == blobs["b"]
        eventually(lambda: cached(running) == {digests["b"]}, "b replaced a")
    assert passed_through(running) == 0


def test_enospc_mid_fill_fails_that_fill_and_the_next_request_passes_through(
    fake: FakeGAR, proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(2).randbytes(3 * MIB)
    digest = fake.put_blob("us", REPO, data)
    running = proxy(fake.upstream)
    absorb = fillwriter._store_batch
    faults = [OSError(errno.ENOSPC, "No space left on device")]

    def full_once(file: BinaryIO, pieces: list[bytes]) -> None:
        if faults:
            raise faults.pop()
        absorb(file, pieces)

    monkeypatch.setattr(fillwriter, "_store_batch", full_once)
    url = f"/v2/{REPO}/blobs/{digest}"
    with httpx.Client(base_url=running.url, timeout=30) as client:
        # Cut (or refused before any byte), never completed.
        with pytest.raises(httpx.HTTPError), client.stream("GET", url) as first:
            if first.status_code == 200:
                assert len(first.read()) < len(data)
            else:
                raise httpx.HTTPError("refused")
        assert cached(running) == set()
        temp = running.settings.cache.dir / "tmp"
        assert not temp.exists() or not any(temp.iterdir())
        second = client.get(url)
        assert second.status_code == 200 and second.content == data
        assert passed_through(running) == 1
        assert cached(running) == set()
        assert client.get(url).content == data  # recovered: cached again
        eventually(lambda: cached(running) == {digest}, "the blob is cached")


def test_a_blob_larger_than_the_cap_is_passed_through_without_flushing_the_cache(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    small, big = random.Random(3).randbytes(MIB), random.Random(4).randbytes(3 * MIB)
    digests = [fake.put_blob("us", REPO, data) for data in (small, big)]
    running = proxy(fake.upstream, cache__max_size=str(2 * MIB))
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get(f"/v2/{REPO}/blobs/{digests[0]}").content == small
        eventually(lambda: cached(running) == {digests[0]}, "the small blob is cached")
        answer = client.get(f"/v2/{REPO}/blobs/{digests[1]}")
        assert answer.status_code == 200 and answer.content == big
    assert cached(running) == {digests[0]} and passed_through(running) == 1
