"""``[[warm]]``: listed images' matching tags are cached without any client pull, a new
matching tag is picked up at the next interval, and a failure is counted, not fatal.

The interval is short (0.3 s) and the test waits, bounded, for what the warmer caches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from proxy.config import ConfigError, load_settings
from proxy.oci.digest import Digest
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

WAIT = 20.0


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        time.sleep(0.02)


def _cached(running: RunningProxy, image: Image) -> bool:
    cache = running.services.cache
    return all(cache.size(Digest.parse(blob.digest)) is not None for blob in image.blobs)


def _warms(running: RunningProxy, outcome: str) -> float:
    value = running.services.metrics.registry.get_sample_value(
        "garproxy_scheduled_warms_total", {"outcome": outcome}
    )
    return value or 0.0


def test_scheduled_images_are_kept_warm_without_a_client_pull(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    images = {
        tag: build_image([make_layer({tag: tag.encode() * 50})]) for tag in ("1.0", "1.1", "0.9")
    }
    fake.put_image("us", "proj/repo/tool", "1.0", images["1.0"])
    fake.put_image("us", "proj/repo/tool", "0.9", images["0.9"])
    schedule = [
        {"image": "proj/repo/tool", "tags": r"^1\.", "interval": "300ms"},
        {"image": "proj/repo/missing", "interval": "300ms"},  # fails every time
    ]
    running = proxy(fake.upstream, cache__warm=schedule)

    _wait_for(lambda: _cached(running, images["1.0"]), "tag 1.0 warmed")
    assert not _cached(running, images["0.9"])  # does not match ^1\.
    fake.put_image("us", "proj/repo/tool", "1.1", images["1.1"])
    _wait_for(lambda: _cached(running, images["1.1"]), "new tag 1.1 warmed")
    _wait_for(lambda: _warms(running, "failed") >= 2, "the missing image failed twice")
    assert _warms(running, "ok") >= 2
    # Still serving, and from the cache: the warmed tag costs no upstream GET.
    fake.reset_counts()
    with httpx.Client(base_url=running.url, timeout=30) as client:
        for blob in images["1.1"].blobs:
            assert client.get(f"/v2/proj/repo/tool/blobs/{blob.digest}").content == blob.data
    assert fake.count("GET", "blob") == 0


def test_warm_entries_are_read_from_top_level_tables_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "gar-proxy.toml"
    config.write_text(
        '[[warm]]\nimage = "docker.io/library/python"\ntags = \'^3\\.12\'\ninterval = "6h"\n'
        'platforms = ["linux/amd64", "linux/arm64"]\n'
    )
    (entry,) = load_settings(config, env={}).cache.warm
    assert (entry.image, entry.tags, entry.interval, entry.platforms) == (
        "docker.io/library/python", r"^3\.12", 6 * 3600.0, ("linux/amd64", "linux/arm64")
    )  # fmt: skip
    for bad in ['[{"image": "p/r/i", "tags": "("}]', '[{"image": "p/r/i:1"}]', '[{"tags": "x"}]']:
        with pytest.raises(ConfigError, match=r"cache\.warm"):
            load_settings(None, env={"GAR_PROXY_CACHE_WARM": bad})
