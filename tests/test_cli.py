"""The maintenance CLI as users run it: ``python -m proxy ...`` in a subprocess.

``warm`` pre-pulls (an index: the host's platform, ``--all-platforms``, or the ones
asked for), ``verify`` finds and removes corrupt blobs, ``gc`` evicts least recently
used blobs down to the cap and never a pinned image's, ``config check`` prints the
effective settings.
The upstream is the fake GAR, which counts what reached it.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.human import human_size
from proxy.oci import mediatypes as mt
from proxy.oci.platform import Platform
from testkit.fakes.gar import FakeGAR
from testkit.images import Image, Index, build_image, build_index, make_layer
from testkit.proxyprocess import ProxyProcess, run_cli
from testkit.servers import serve_in_thread

REPO = "proj/repo/app"
ACCEPT = ", ".join(mt.DEFAULT_ACCEPT)


class Upstream:
    def __init__(self, fake: FakeGAR, url: str) -> None:
        self.fake = fake
        self.url = url + "/{location}"  # GAR-shaped: the proxy fills in the location


@pytest.fixture
def gar() -> Iterator[Upstream]:
    fake = FakeGAR(auth="none")
    with fake.serve() as url:
        yield Upstream(fake, url)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _image(name: str, architecture: str = "amd64", size: int | None = None) -> Image:
    seed = sum(name.encode()) + len(architecture)
    layer = make_layer({f"{name}.txt": f"{name} {architecture}".encode()}, seed=seed)
    if size is not None:
        layer = make_layer(size=size, seed=seed)
    return build_image([layer], architecture=architecture)


def _multi_arch() -> Index:
    return build_index([_image("app"), _image("app", "arm64"), _image("app", "arm")])


def cached_files(cache: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (cache / "blobs" / "sha256").glob("*/*")}


def indexed_blobs(cache: Path) -> set[str]:
    with sqlite3.connect(cache / "index.sqlite3") as db:
        return {row[0] for row in db.execute("SELECT digest FROM blobs")}


def digests(*items: Image | Index) -> set[str]:
    return {blob.digest for item in items for blob in item.blobs}


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


# ---------------------------------------------------------------- warm


def test_warm_caches_every_platform_and_an_offline_proxy_serves_it(
    tmp_path: Path, cache: Path
) -> None:
    index = _multi_arch()
    fake = FakeGAR(auth="none")
    fake.put_image("us", REPO, "1.0", index)
    with fake.serve() as url:
        upstream = url + "/{location}"
        warmed = run_cli(cache, upstream, "warm", "--all-platforms", f"{REPO}:1.0")
        _ok(warmed)
    assert "warmed 3 image(s)" in warmed.stdout
    assert f"0 already cached (0 bytes), {len(index.blobs)} fetched" in warmed.stdout
    assert cached_files(cache) == indexed_blobs(cache) == digests(index)
    assert fake.count("GET", "blob") == len(index.blobs)

    # Upstream is gone; an offline proxy on the same cache serves the whole index.
    with (
        ProxyProcess(cache, upstream, global_args=["--offline"]) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as client,
    ):
        got = client.get(f"/v2/{REPO}/manifests/1.0", headers={"Accept": ACCEPT})
        assert got.status_code == 200, got.text
        assert got.content == index.manifest
        for image in index.images:
            child = client.get(f"/v2/{REPO}/manifests/{image.digest}", headers={"Accept": ACCEPT})
            assert child.content == image.manifest
            for blob in image.blobs:
                assert client.get(f"/v2/{REPO}/blobs/{blob.digest}").content == blob.data


def test_warm_without_platform_caches_the_hosts_child_only(gar: Upstream, cache: Path) -> None:
    index = _multi_arch()
    gar.fake.put_image("us", REPO, "1.0", index)
    _ok(run_cli(cache, gar.url, "warm", f"{REPO}:1.0"))
    host = Platform.host().architecture
    (wanted,) = [i for i in index.images if (i.platform or {})["architecture"] == host]
    assert cached_files(cache) == indexed_blobs(cache) == digests(wanted)


@pytest.mark.parametrize(
    ("asked", "architecture"), [("linux/arm64", "arm64"), ("linux/x86_64", "amd64")]
)
def test_warm_one_platform_caches_only_that_child(
    asked: str, architecture: str, gar: Upstream, cache: Path
) -> None:
    index = _multi_arch()
    gar.fake.put_image("us", REPO, "1.0", index)

    warmed = run_cli(cache, gar.url, "warm", "--platform", asked, f"{REPO}:1.0")

    _ok(warmed)
    assert "warmed 1 image(s)" in warmed.stdout
    (wanted,) = [i for i in index.images if (i.platform or {})["architecture"] == architecture]
    assert cached_files(cache) == indexed_blobs(cache) == digests(wanted)
    assert gar.fake.count("GET", "blob") == len(wanted.blobs)


def test_warm_again_says_what_was_already_cached_in_human_sizes(gar: Upstream, cache: Path) -> None:
    image = _image("again", size=3 << 20)
    gar.fake.put_image("us", REPO, "1.0", image)
    total = human_size(sum(b.size for b in image.blobs))
    first = run_cli(cache, gar.url, "warm", f"{REPO}:1.0")
    _ok(first)
    assert f"0 already cached (0 bytes), {len(image.blobs)} fetched ({total})" in first.stdout
    second = run_cli(cache, gar.url, "warm", f"{REPO}:1.0")
    _ok(second)
    assert f"{len(image.blobs)} already cached ({total}), 0 fetched (0 bytes)" in second.stdout
    assert "MiB" in total and second.stdout.count("already cached") == len(image.blobs) + 1


def test_warm_a_platform_not_in_the_index_fails_naming_the_available_ones(
    gar: Upstream, cache: Path
) -> None:
    gar.fake.put_image("us", REPO, "1.0", _multi_arch())

    warmed = run_cli(cache, gar.url, "warm", "--platform", "linux/s390x", f"{REPO}:1.0")

    assert warmed.returncode != 0
    assert "linux/s390x" in warmed.stderr
    assert "available: linux/amd64, linux/arm64, linux/arm" in warmed.stderr
    assert "Traceback" not in warmed.stderr
    assert cached_files(cache) == set()
    assert gar.fake.count("GET", "blob") == 0


def test_warm_a_single_platform_image_checks_the_platform_asked_for(
    gar: Upstream, cache: Path
) -> None:
    image = _image("solo", "arm64")
    gar.fake.put_image("us", REPO, "solo", image)

    refused = run_cli(cache, gar.url, "warm", "--platform", "linux/amd64", f"{REPO}:solo")
    assert refused.returncode != 0
    assert "single-platform image for linux/arm64, not linux/amd64" in refused.stderr
    assert cached_files(cache) == {image.config.digest}  # only the config was read

    _ok(run_cli(cache, gar.url, "warm", "--platform", "linux/aarch64", f"{REPO}:solo"))
    assert cached_files(cache) == digests(image)


# ---------------------------------------------------------------- verify


def test_verify_removes_a_corrupt_blob_and_the_next_pull_refetches_it(
    gar: Upstream, cache: Path
) -> None:
    image = _image("verify", size=64 << 10)
    gar.fake.put_image("us", REPO, "1.0", image)
    _ok(run_cli(cache, gar.url, "warm", f"{REPO}:1.0"))
    layer = image.layers[0]
    path = cache / "blobs" / "sha256" / layer.digest[7:9] / layer.digest[7:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    verified = run_cli(cache, gar.url, "verify")

    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert f"corrupt, removed: {layer.digest}" in verified.stdout
    assert "1 corrupt blobs removed" in verified.stdout
    assert f"checked {len(image.blobs)} blobs" in verified.stdout
    assert not path.exists()
    assert layer.digest not in indexed_blobs(cache)
    assert cached_files(cache) == indexed_blobs(cache) == {image.config.digest}
    _ok(run_cli(cache, gar.url, "verify"))  # clean now

    gar.fake.reset_counts()
    with ProxyProcess(cache, gar.url) as proxy:
        got = httpx.get(f"{proxy.url}/v2/{REPO}/blobs/{layer.digest}", timeout=30)
    assert got.status_code == 200
    assert got.content == layer.data
    assert gar.fake.count("GET", "blob", path=layer.digest) == 1
    assert path.read_bytes() == layer.data


# ---------------------------------------------------------------- gc


def test_gc_evicts_least_recently_used_down_to_the_cap_and_never_pinned_blobs(
    gar: Upstream, cache: Path
) -> None:
    pinned, older, newer = (_image(name, size=128 << 10) for name in ("pinned", "older", "newer"))
    for name, image in (("pinned", pinned), ("older", older), ("newer", newer)):
        gar.fake.put_image("us", f"proj/repo/{name}", "1.0", image)
    # In order of use: the pinned image is the least recently used of all.
    _ok(run_cli(cache, gar.url, "warm", "--pin", "proj/repo/pinned:1.0"))
    _ok(run_cli(cache, gar.url, "warm", "proj/repo/older:1.0"))
    _ok(run_cli(cache, gar.url, "warm", "proj/repo/newer:1.0"))
    assert cached_files(cache) == digests(pinned, older, newer)
    cap = sum(b.size for b in (*pinned.blobs, *newer.blobs))

    collected = run_cli(cache, gar.url, "gc", env={"GAR_PROXY_CACHE_MAX_SIZE": str(cap)})

    _ok(collected)
    freed = sum(b.size for b in older.blobs)
    assert f"evicted {len(older.blobs)} blobs, freed {human_size(freed)}" in collected.stdout
    assert cached_files(cache) == indexed_blobs(cache) == digests(pinned, newer)

    # A cap below the pinned image alone: everything else goes, the pinned image stays.
    collected = run_cli(cache, gar.url, "gc", env={"GAR_PROXY_CACHE_MAX_SIZE": "1KiB"})

    _ok(collected)
    assert cached_files(cache) == indexed_blobs(cache) == digests(pinned)


# ---------------------------------------------------------------- config check


def test_config_check_prints_effective_settings_with_secrets_redacted(
    tmp_path: Path, cache: Path
) -> None:
    env = {"GAR_PROXY_CACHE_MAX_SIZE": "3MiB", "GAR_PROXY_UPSTREAM_PASSWORD": "hunter2-secret"}
    checked = run_cli(cache, "http://127.0.0.1:9/{location}", "config", "check", env=env)

    assert checked.returncode == 1  # the upstream at :9 does not answer
    assert "FAIL  upstream: upstream http://127.0.0.1:9/us/v2/ did not answer" in checked.stdout
    assert "ok    cache dir:" in checked.stdout
    table, _ = checked.stdout.split("\n\n", 1)
    rows, sources = {}, {}
    for line in table.splitlines():
        key, rest = line.split(None, 1)
        value, source = rest.rsplit("  [", 1)
        rows[key], sources[key] = value.strip(), source.rstrip("]")
    assert sources["cache.max_size"] == "env GAR_PROXY_CACHE_MAX_SIZE"
    assert sources["upstream.url"] == sources["cache.dir"] == "flag"
    assert sources["cache.tag_ttl"] == "default"
    assert rows["cache.max_size"] == str(3 << 20)
    assert rows["cache.dir"] == str(cache)
    assert rows["upstream.url"] == "http://127.0.0.1:9/{location}"
    assert rows["upstream.auth"] == "none"
    assert rows["upstream.password"] == "<redacted>"
    assert rows["server.listen"] == "127.0.0.1:5000"
    assert "hunter2-secret" not in checked.stdout + checked.stderr


def test_config_check_names_a_bad_setting_and_exits_2(tmp_path: Path, cache: Path) -> None:
    checked = run_cli(
        cache, "http://127.0.0.1:9", "config", "check", env={"GAR_PROXY_CACHE_MAX_SIZE": "lots"}
    )
    assert checked.returncode == 2
    assert checked.stderr.strip() == (
        "gar-proxy: config: cache.max_size (GAR_PROXY_CACHE_MAX_SIZE): "
        "expected a size like '50GiB', got 'lots'"
    )


# ---------------------------------------------------------------- alongside a live proxy


class HeldBlobs:
    """ASGI wrapper: blob bodies stop after their first chunk until ``release`` is set,
    so a fill is reliably in flight for as long as a test needs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.release = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        blob = "/blobs/sha256:" in scope.get("path", "") or "/artifacts-downloads/" in scope.get(
            "path", ""
        )
        if scope["type"] != "http" or not blob:
            await self.app(scope, receive, send)
            return
        bodies = 0

        async def held(message: Message) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body":
                bodies += 1
                if bodies == 2:
                    await asyncio.to_thread(self.release.wait, 30)
            await send(message)

        await self.app(scope, receive, held)


def test_gc_and_verify_leave_a_running_proxys_fills_alone(cache: Path) -> None:
    """The commands open the cache a proxy is serving from: its in-flight fill (a temp
    file the commands' start-up must not mistake for a crash's leftover) completes."""
    fake = FakeGAR(auth="none")
    data = random.Random(11).randbytes(4 << 20)
    digest = fake.put_blob("us", REPO, data)
    held = HeldBlobs(fake)
    got: dict[str, object] = {}

    def pull(url: str) -> None:
        try:
            got["body"] = httpx.get(f"{url}/v2/{REPO}/blobs/{digest}", timeout=60).content
        except httpx.HTTPError as error:
            got["error"] = error

    with serve_in_thread(held) as url, ProxyProcess(cache, url + "/{location}") as proxy:
        upstream = url + "/{location}"
        puller = threading.Thread(target=pull, args=(proxy.url,))
        puller.start()
        try:
            deadline = time.monotonic() + 10
            while not any((cache / "tmp").iterdir()) and time.monotonic() < deadline:
                time.sleep(0.01)
            (temp,) = (cache / "tmp").iterdir()
            _ok(run_cli(cache, upstream, "gc"))
            _ok(run_cli(cache, upstream, "verify"))
            assert temp.exists()
        finally:
            held.release.set()
            puller.join(30)
        assert "error" not in got, got.get("error")
        assert got["body"] == data
        assert cached_files(cache) == {digest}
        again = httpx.get(f"{proxy.url}/v2/{REPO}/blobs/{digest}", timeout=30)
        assert again.content == data
    assert fake.count("GET", "blob") == 1
    assert indexed_blobs(cache) == {digest}


def test_gc_beside_a_running_proxy_does_not_make_it_evict_more_than_needed(
    gar: Upstream, cache: Path
) -> None:
    """The proxy keeps a running total of cached bytes; blobs another process evicted
    must not still count, or the proxy's next eviction removes blobs for nothing."""
    mib = 1 << 20
    blobs = {name: random.Random(name).randbytes(mib) for name in "abcde"}
    digests = {name: gar.fake.put_blob("us", REPO, data) for name, data in blobs.items()}
    env = {"GAR_PROXY_CACHE_MAX_SIZE": str(4 * mib)}
    with (
        ProxyProcess(cache, gar.url, env=env) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as client,
    ):
        for name in "abc":
            assert client.get(f"/v2/{REPO}/blobs/{digests[name]}").content == blobs[name]
        _ok(run_cli(cache, gar.url, "gc", env={"GAR_PROXY_CACHE_MAX_SIZE": str(mib)}))
        assert cached_files(cache) == {digests["c"]}
        for name in "de":  # 3 MiB cached in truth, under the proxy's 4 MiB cap
            assert client.get(f"/v2/{REPO}/blobs/{digests[name]}").content == blobs[name]
        time.sleep(0.5)  # an eviction, if one were (wrongly) started, has run by now
        assert cached_files(cache) == {digests[n] for n in "cde"}


def test_the_cache_bytes_gauge_follows_a_gc_in_another_process(
    gar: Upstream, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.services import container
    from testkit.proxyharness import proxy_settings, run_proxy

    monkeypatch.setattr(container, "FLUSH_INTERVAL", 0.05)
    monkeypatch.setattr(container, "RECOUNT_INTERVAL", 0.2)
    blobs = [random.Random(n).randbytes(300_000) for n in range(2)]
    digests = [gar.fake.put_blob("us", REPO, data) for data in blobs]
    settings = proxy_settings(cache.parent, gar.url)
    assert settings.cache.dir == cache
    with run_proxy(settings) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as client:

        def gauge() -> float:
            value = proxy.services.metrics.registry.get_sample_value("garproxy_cache_bytes")
            return value or 0.0

        for digest, data in zip(digests, blobs, strict=True):
            assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data
        deadline = time.monotonic() + 10
        while gauge() != 600_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gauge() == 600_000
        _ok(run_cli(cache, gar.url, "gc", env={"GAR_PROXY_CACHE_MAX_SIZE": "1KiB"}))
        assert cached_files(cache) == set()
        deadline = time.monotonic() + 10
        while gauge() != 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gauge() == 0
