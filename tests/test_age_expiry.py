"""``cache.max_age``: the periodic sweep removes what was not read for that long,
whatever the cache's size; pinned images stay. The clock is stepped."""

from __future__ import annotations

from pathlib import Path

import httpx

from proxy.clock import ManualClock
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.services.container import sweep_expired
from proxy.services.warming import warm
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.proxyprocess import run_cli
from tests.conftest import FakeGarFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
HOUR = 3600.0


def _pull(running: RunningProxy, repo: str, image: Image, blobs: list[str] | None = None) -> None:
    with httpx.Client(base_url=running.url, timeout=30) as client:
        if blobs is None:
            assert client.get(f"/v2/{repo}/manifests/1", headers=ACCEPT).status_code == 200
        for blob in image.blobs:
            if blobs is None or blob.digest in blobs:
                assert client.get(f"/v2/{repo}/blobs/{blob.digest}").content == blob.data


def _cached(running: RunningProxy, digest: str) -> bool:
    return running.services.cache.size(Digest.parse(digest)) is not None


def test_unread_blobs_and_manifests_expire_and_pinned_ones_stay(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> None:
    fake = fake_gar(auth="none")
    old = build_image([make_layer({"old": b"o" * 5000})])
    pinned = build_image([make_layer({"pinned": b"p" * 5000})])
    fake.put_image("us", "proj/repo/old", "1", old)
    fake.put_image("us", "proj/repo/pinned", "1", pinned)
    clock = ManualClock()
    settings = proxy_settings(tmp_path, fake.upstream, cache__max_age="1d")
    with run_proxy(settings, clock=clock) as running:
        services = running.services
        _pull(running, "proj/repo/old", old)
        running.call(warm(services, "proj/repo/pinned:1", [], pin=True))
        clock.advance(12 * HOUR)
        layer = old.layers[0].digest
        _pull(running, "proj/repo/old", old, blobs=[layer])  # read again: 12 h younger
        clock.advance(12 * HOUR + 1)
        running.call(sweep_expired(settings, services.cache))

        assert _cached(running, layer)
        assert not _cached(running, old.config.digest)
        assert running.call(services.index.manifests.get(Digest.parse(old.digest))) is None
        assert running.call(services.index.tags.get("us-docker.pkg.dev/proj/repo/old", "1")) is None
        assert all(_cached(running, blob.digest) for blob in pinned.blobs)
        assert running.call(services.index.manifests.get(Digest.parse(pinned.digest)))
        # What expired comes back from upstream on the next pull.
        fetched = fake.count("GET", "manifest")
        _pull(running, "proj/repo/old", old)
        assert fake.count("GET", "manifest") == fetched + 1
        assert _cached(running, old.config.digest)
    # gar-proxy gc expires too. The stepped clock's time was November 2023, so to gc's
    # real clock everything is over a day unread: all of it goes but the pinned image.
    result = run_cli(tmp_path / "cache", fake.upstream, "gc", env={"GAR_PROXY_CACHE_MAX_AGE": "1d"})
    assert result.returncode == 0, result.stderr
    assert f"expired {len(old.blobs)} blobs and 1 manifests" in result.stdout, result.stdout
    blob_files = {p.name for p in (tmp_path / "cache" / "blobs").rglob("*") if p.is_file()}
    assert blob_files == {blob.digest.split(":")[1] for blob in pinned.blobs}
