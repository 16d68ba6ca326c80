"""Pull-through cache against the fake GAR: what reaches upstream, and what clients get.

Every test counts the requests the fake received: a warm pull sends none, a cold blob
asked for by twenty clients at once is downloaded once, a fill outlives the client that
started it, ranges come from the cache, and an offline proxy never calls out.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def client(running: RunningProxy) -> httpx.Client:
    return httpx.Client(base_url=running.url, timeout=30, verify=False)


def async_client(running: RunningProxy) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=50)
    return httpx.AsyncClient(base_url=running.url, timeout=30, verify=False, limits=limits)


def pull(http: httpx.Client, image: Image, tag: str = "1.0", repo: str = REPO) -> None:
    """What a client does: the manifest by tag, then every blob; checks every byte."""
    got = http.get(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT)
    assert got.status_code == 200, got.text
    assert got.content == image.manifest
    assert got.headers["docker-content-digest"] == image.digest
    for blob in image.blobs:
        body = http.get(f"/v2/{repo}/blobs/{blob.digest}")
        assert body.status_code == 200, body.text
        assert body.content == blob.data


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none", chunk_size=64 * 1024)


@pytest.fixture
def running(fake: FakeGAR, proxy: ProxyFactory) -> RunningProxy:
    return proxy(fake.upstream)


def test_second_pull_sends_nothing_upstream(fake: FakeGAR, running: RunningProxy) -> None:
    image = build_image([make_layer({"a": b"1"}), make_layer(size=1 << 20, seed=2)])
    fake.put_image("us", REPO, "1.0", image)
    with client(running) as http:
        pull(http, image)
        assert fake.count("GET", "manifest") == 1
        assert fake.count("GET", "blob") == len(image.blobs)
        fake.reset_counts()
        pull(http, image)
    assert fake.count() == 0  # not a GET, not even a HEAD: the tag is within its TTL
    assert running.upstream_fetches("blob") == len(image.blobs)
    assert running.upstream_fetches("manifest") == 1


def test_twenty_concurrent_cold_gets_make_one_upstream_get(
    fake: FakeGAR, running: RunningProxy
) -> None:
    data = make_layer(size=64 << 20, seed=7)
    digest = fake.put_blob("us", REPO, data)
    del data  # the fake holds it; the test keeps only hashes
    ready = threading.Barrier(20)

    def fetch(_: int) -> tuple[str, int]:
        hasher, size = hashlib.sha256(), 0
        # Threads with a client each: hashing and socket reads run outside the GIL.
        with client(running) as http:
            ready.wait(10)
            with http.stream("GET", f"/v2/{REPO}/blobs/{digest}") as response:
                assert response.status_code == 200
                for chunk in response.iter_raw(1 << 20):
                    hasher.update(chunk)
                    size += len(chunk)
        return "sha256:" + hasher.hexdigest(), size

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(fetch, range(20)))
    assert {digest for digest, _ in results} == {digest}
    assert fake.count("GET", "blob") == 1
    assert running.services.cache.size(Digest.parse(digest)) == results[0][1]
    # All twenty missed and joined the one fill (the fake takes ~1 s to send 64 MiB).
    misses = running.services.metrics.registry.get_sample_value(
        "garproxy_cache_lookups_total", {"kind": "blob", "outcome": "miss"}
    )
    assert misses == 20


async def test_followers_get_bytes_while_the_fill_is_still_running(
    fake: FakeGAR, running: RunningProxy
) -> None:
    data = make_layer(size=2 << 20, seed=8)  # 33 chunks of 64 KiB at 20 ms each
    digest = fake.put_blob("us", REPO, data)
    fake.add_fault(Fault(kind="blob", method="GET", slow_body=0.02))
    parsed = Digest.parse(digest)
    leader_started = asyncio.Event()
    seen_while_filling: list[bool] = []

    async def fetch(http: httpx.AsyncClient, follower: bool) -> bytes:
        body = bytearray()
        async with http.stream("GET", f"/v2/{REPO}/blobs/{digest}") as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                if not body:
                    if follower:
                        fill = running.services.blobs.fill_for(parsed)
                        seen_while_filling.append(fill is not None and not fill.done)
                    leader_started.set()
                body += chunk
        return bytes(body)

    async with async_client(running) as http:
        leader = asyncio.create_task(fetch(http, follower=False))
        await asyncio.wait_for(leader_started.wait(), 10)
        follower = await fetch(http, follower=True)
        assert await leader == follower == data
    assert seen_while_filling == [True]
    assert running.services.cache.size(parsed) is not None  # the follower did not arrive late
    assert fake.count("GET", "blob") == 1


async def test_first_client_leaving_does_not_abort_the_fill(
    fake: FakeGAR, running: RunningProxy
) -> None:
    data = make_layer(size=2 << 20, seed=9)
    digest = fake.put_blob("us", REPO, data)
    fake.add_fault(Fault(kind="blob", method="GET", slow_body=0.01))
    parsed = Digest.parse(digest)
    async with async_client(running) as http:
        async with http.stream("GET", f"/v2/{REPO}/blobs/{digest}") as response:
            async for _chunk in response.aiter_raw():
                break  # hang up after the first bytes
        assert running.services.cache.size(parsed) is None  # still filling
        await asyncio.to_thread(wait_for, lambda: running.services.cache.size(parsed) == len(data))
        fake.clear_faults()
        again = await http.get(f"/v2/{REPO}/blobs/{digest}")
    assert again.content == data
    assert fake.count("GET", "blob") == 1
    assert running.call(running.services.index.blobs.size(parsed)) == len(data)
    assert not running.services.cache.in_use(parsed)  # the departed reader let go


def test_ranges_on_a_cached_blob(fake: FakeGAR, running: RunningProxy) -> None:
    data = make_layer(size=300_000, seed=10)
    size = len(data)
    digest = fake.put_blob("us", REPO, data)
    url = f"/v2/{REPO}/blobs/{digest}"
    with client(running) as http:
        assert http.get(url).content == data
        part = http.get(url, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 1000-1999/{size}"
        assert part.headers["content-length"] == "1000"
        assert part.content == data[1000:2000]
        suffix = http.get(url, headers={"Range": "bytes=-10"})
        assert suffix.status_code == 206
        assert suffix.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
        assert suffix.content == data[-10:]
        open_ended = http.get(url, headers={"Range": f"bytes={size - 5}-"})
        assert open_ended.status_code == 206 and open_ended.content == data[-5:]
        beyond = http.get(url, headers={"Range": f"bytes={size}-{size + 10}"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{size}"
        assert beyond.json()["errors"][0]["code"] == "RANGE_INVALID"
    assert fake.count("GET", "blob") == 1


def test_range_on_a_miss_fills_the_whole_blob(fake: FakeGAR, running: RunningProxy) -> None:
    data = make_layer(size=500_000, seed=11)
    digest = fake.put_blob("us", REPO, data)
    with client(running) as http:
        part = http.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
        assert part.content == data[100:200]
        assert running.services.cache.size(Digest.parse(digest)) == len(data)
        assert http.get(f"/v2/{REPO}/blobs/{digest}").content == data
    assert fake.count("GET", "blob") == 1


async def test_concurrent_manifest_misses_make_one_upstream_get(
    fake: FakeGAR, running: RunningProxy
) -> None:
    image = build_image([make_layer({"m": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    # Hold the first upstream answer so that every other request arrives while it is out.
    fake.add_fault(Fault(kind="manifest", method="GET", delay=0.3, times=2))
    async with async_client(running) as http:
        by_tag = [http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT) for _ in range(10)]
        by_digest = [http.get(f"/v2/{REPO}/manifests/{image.digest}") for _ in range(10)]
        answers = await asyncio.gather(*by_tag)
        answers += await asyncio.gather(*by_digest)
    assert all(a.status_code == 200 and a.content == image.manifest for a in answers)
    # One for the tag; the digest was cached by then and needed nothing.
    assert fake.count("GET", "manifest") == 1
    assert fake.count("HEAD", "manifest") == 0


async def test_concurrent_misses_by_digest_make_one_upstream_get(
    fake: FakeGAR, running: RunningProxy
) -> None:
    image = build_image([make_layer({"m": b"2"})])
    fake.put_image("us", REPO, None, image)
    fake.add_fault(Fault(kind="manifest", method="GET", delay=0.3, times=1))
    async with async_client(running) as http:
        answers = await asyncio.gather(
            *(http.get(f"/v2/{REPO}/manifests/{image.digest}") for _ in range(10))
        )
    assert all(a.status_code == 200 and a.content == image.manifest for a in answers)
    assert fake.count("GET", "manifest") == 1


def test_offline_serves_the_warm_cache_and_never_calls_out(tmp_path: Path) -> None:
    image = build_image([make_layer({"o": b"1"}), make_layer(size=200_000, seed=12)])
    fake = FakeGAR(auth="none")
    fake.put_image("us", REPO, "1.0", image)
    unknown_blob = sha256(b"never seen")
    with fake.serve() as url:
        upstream = url + "/{location}"
        with run_proxy(proxy_settings(tmp_path, upstream)) as warm, client(warm) as http:
            pull(http, image)
    seen = fake.count()
    # The fake is gone now; the offline proxy must not even try to reach it.
    offline = proxy_settings(tmp_path, upstream, cache__offline="true")
    with run_proxy(offline) as running, client(running) as http:
        pull(http, image)
        by_digest = http.get(f"/v2/{REPO}/manifests/{image.digest}")
        assert by_digest.status_code == 200 and by_digest.content == image.manifest
        head = http.head(f"/v2/{REPO}/blobs/{image.layers[1].digest}")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(image.layers[1].size)
        missing_tag = http.get(f"/v2/{REPO}/manifests/2.0", headers=ACCEPT)
        assert missing_tag.status_code == 404
        assert missing_tag.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        missing_blob = http.get(f"/v2/{REPO}/blobs/{unknown_blob}")
        assert missing_blob.status_code == 404
        assert missing_blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert http.head(f"/v2/{REPO}/blobs/{unknown_blob}").status_code == 404
        other_repo = http.get("/v2/proj/repo/other/manifests/1.0", headers=ACCEPT)
        assert other_repo.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert running.upstream_fetches("blob") == running.upstream_fetches("manifest") == 0
    assert fake.count() == seen


def test_a_blob_gone_between_lookup_and_open_is_fetched_again(
    fake: FakeGAR, running: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_layer(size=100_000, seed=31)
    digest = fake.put_blob("us", REPO, data)
    url = f"/v2/{REPO}/blobs/{digest}"
    cache = running.services.cache
    real_read = cache.read
    opened: list[str] = []

    def evicted_meanwhile(found: Digest, start: int = 0, end: int | None = None) -> object:
        if not opened:  # the file goes after the stat, before the open
            opened.append("gone")
            cache.store.path(found).unlink()
            return real_read(found, start, end)
        return real_read(found, start, end)

    with client(running) as http:
        assert http.get(url).content == data
        assert fake.count("GET", "blob") == 1
        monkeypatch.setattr(cache, "read", evicted_meanwhile)
        again = http.get(url)
        assert again.status_code == 200 and again.content == data
    assert opened == ["gone"]
    assert fake.count("GET", "blob") == 2  # a miss, refetched, not a cut response
