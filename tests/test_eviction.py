"""The size cap: fills that push the cache over it evict the least recently used
blobs, never one a client is still reading, never one a pinned image needs."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR
from testkit.images import OCI_LAYER_GZIP, build_image
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.proxyprocess import run_cli
from tests.conftest import FakeGarFactory

REPO = "proj/repo/app"
MIB = 1 << 20


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none", chunk_size=MIB)


def cached(proxy: RunningProxy) -> set[str]:
    root = proxy.settings.cache.dir / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in root.glob("*/*")}


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def seed(fake: FakeGAR, names: str, size: int = MIB) -> dict[str, tuple[str, bytes]]:
    blobs = {}
    for name in names:
        data = random.Random(name).randbytes(size)
        blobs[name] = (fake.put_blob("us", REPO, data), data)
    return blobs


def test_fills_over_the_cap_evict_the_least_recently_used(fake: FakeGAR, tmp_path: Path) -> None:
    upstream = fake.upstream
    blobs = seed(fake, "abcde")
    settings = proxy_settings(tmp_path, upstream, cache__max_size=str(3 * MIB))
    with run_proxy(settings) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as client:

        def pull(name: str) -> None:
            digest, data = blobs[name]
            assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data

        def expect(names: str) -> None:
            want = {blobs[n][0] for n in names}
            eventually(
                lambda: (
                    cached(proxy) == want
                    and proxy.services.index.blobs.total_bytes == len(names) * MIB
                ),
                f"the cache holds {names}",
            )

        for name in "abc":
            pull(name)
        expect("abc")  # exactly at the cap: nothing to evict
        pull("a")  # a hit: "a" is now the most recently used
        pull("d")
        expect("acd")  # "b" was the least recently used
        pull("e")
        expect("ade")
        pull("b")  # gone, so fetched again
        expect("deb")
    assert fake.count("GET", "blob", path=blobs["a"][0]) == 1
    assert fake.count("GET", "blob", path=blobs["b"][0]) == 2


def test_a_blob_being_read_is_not_evicted_and_its_reader_gets_every_byte(
    fake: FakeGAR, tmp_path: Path
) -> None:
    upstream = fake.upstream
    ((big_digest, big),) = seed(fake, "R", size=12 * MIB).values()
    small = seed(fake, "stuvw")
    settings = proxy_settings(tmp_path, upstream, cache__max_size=str(14 * MIB))
    # A tiny receive window: the proxy can only get a few MiB ahead of this reader.
    slow = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)])
    with (
        run_proxy(settings) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as client,
        httpx.Client(base_url=proxy.url, timeout=30, transport=slow) as slow_client,
    ):

        def pull(name: str) -> None:
            digest, data = small[name]
            assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data

        assert client.get(f"/v2/{REPO}/blobs/{big_digest}").content == big  # cached
        big_path = proxy.settings.cache.dir / "blobs" / "sha256" / big_digest[7:9] / big_digest[7:]
        hasher = hashlib.sha256()
        with slow_client.stream("GET", f"/v2/{REPO}/blobs/{big_digest}") as response:
            chunks = response.iter_raw(64 << 10)
            received = 0
            for chunk in chunks:  # a first sip, then hold the stream open
                hasher.update(chunk)
                received += len(chunk)
                break
            eventually(lambda: proxy.services.cache.in_use(Digest.parse(big_digest)), "reading")
            # Used after the read began, the small blobs are all more recent than the
            # big one, which is now the least recently used, and over the cap with them.
            for name in "stuv":
                pull(name)
            # 16 MiB against a 14 MiB cap: "s" and "t" go, the big one is skipped.
            want = {big_digest} | {small[n][0] for n in "uv"}
            eventually(lambda: cached(proxy) == want, "s and t are evicted")
            assert big_path.exists()
            assert proxy.services.cache.in_use(Digest.parse(big_digest))  # still mid-read
            for chunk in chunks:
                hasher.update(chunk)
                received += len(chunk)
        assert (received, f"sha256:{hasher.hexdigest()}") == (len(big), big_digest)

        # Read done: it is fair game again, and it is the least recently used.
        eventually(lambda: not proxy.services.cache.in_use(Digest.parse(big_digest)), "done")
        pull("w")
        want = {small[n][0] for n in "uvw"}
        eventually(lambda: cached(proxy) == want, "the big blob is evicted")
    assert fake.count("GET", "blob", path=big_digest) == 1


def test_pinned_images_survive_eviction(fake: FakeGAR, tmp_path: Path) -> None:
    upstream = fake.upstream
    pinned = build_image([random.Random("p").randbytes(MIB)])
    fake.put_image("us", "proj/repo/pinned", "1.0", pinned)
    blobs = seed(fake, "abcd")
    settings = proxy_settings(tmp_path, upstream, cache__max_size=str(3 * MIB))
    warmed = run_cli(settings.cache.dir, upstream, "warm", "--pin", "proj/repo/pinned:1.0")
    assert warmed.returncode == 0, warmed.stderr
    pinned_blobs = {b.digest for b in pinned.blobs}
    with run_proxy(settings) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as client:
        assert cached(proxy) == pinned_blobs
        for name in "abcd":  # the pinned blobs are the least recently used of all
            digest, data = blobs[name]
            assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data
        # 1 MiB and a config pinned, so room for one more MiB: the last one used.
        want = pinned_blobs | {blobs["d"][0]}
        eventually(
            lambda: cached(proxy) == want and proxy.services.index.blobs.total_bytes <= 3 * MIB,
            "a, b and c are evicted",
        )


def test_an_evicted_large_manifest_is_fetched_again(fake: FakeGAR, tmp_path: Path) -> None:
    """Manifests over 4 MiB live in the blob store, so eviction can take them; the
    manifest's row must then not promise bytes that are gone."""
    upstream = fake.upstream
    config = fake.put_blob("us", REPO, b"{}")
    rng = random.Random("layers")
    layers = [
        {"mediaType": OCI_LAYER_GZIP, "digest": f"sha256:{rng.randbytes(32).hex()}", "size": 1}
        for _ in range(40_000)
    ]
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config, "size": 2},
            "layers": layers,
        }
    ).encode()
    assert len(body) > 4 * MIB
    digest = fake.put_manifest("us", REPO, "big", body, mt.OCI_MANIFEST)
    blobs = seed(fake, "abc")
    settings = proxy_settings(tmp_path, upstream, cache__max_size=str(len(body) + 2 * MIB))
    with run_proxy(settings) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as client:
        got = client.get(f"/v2/{REPO}/manifests/big", headers={"Accept": mt.OCI_MANIFEST})
        assert got.status_code == 200
        assert got.content == body
        assert digest in cached(proxy)  # kept as a blob file
        # Not parsed whole, but its references are known, so a pin would keep them.
        children = proxy.call(proxy.services.index.manifests.children(Digest.parse(digest)))
        assert {str(c) for c in children} == {config} | {layer["digest"] for layer in layers}
        for name in "abc":
            assert client.get(f"/v2/{REPO}/blobs/{blobs[name][0]}").content == blobs[name][1]
        eventually(lambda: digest not in cached(proxy), "the manifest is evicted")
        for reference in (digest, "big"):
            got = client.get(
                f"/v2/{REPO}/manifests/{reference}", headers={"Accept": mt.OCI_MANIFEST}
            )
            assert got.status_code == 200, got.text
            assert got.content == body
    assert fake.count("GET", "manifest") == 2


@pytest.mark.parametrize("before_boundary", [1, 9, 40, 79, 200])
def test_a_digest_field_cut_by_a_read_boundary_is_still_found(
    tmp_path: Path, before_boundary: int
) -> None:
    from proxy.oci.references import digests_in_file as _children_in_file

    wanted = f"sha256:{random.Random(before_boundary).randbytes(32).hex()}"
    field = f'"digest" :  "{wanted}"'.encode()
    path = tmp_path / "manifest"
    path.write_bytes(b" " * (MIB - before_boundary) + field + b', "digest": "sha256:x"')
    assert [str(d) for d in _children_in_file(path)] == [wanted]
