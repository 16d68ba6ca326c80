"""Upstream 404s are remembered for ``cache.negative_ttl``: probes stop asking GAR.

The proxy runs on a ``ManualClock``; the TTL is stepped, never slept through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.clock import ManualClock
from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer, push_image, sha256
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.conftest import FakeGarFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
REPO = "proj/repo/app"


@pytest.fixture
def setup(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> Iterator[tuple[FakeGAR, RunningProxy, ManualClock]]:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "repo")  # GAR creates none on push
    clock = ManualClock()
    with run_proxy(proxy_settings(tmp_path, fake.upstream), clock=clock) as running:
        yield fake, running, clock


def _probe(client: httpx.Client, path: str, method: str = "GET") -> int:
    return client.request(method, f"/v2/{REPO}/{path}", headers=ACCEPT).status_code


def test_ten_probes_of_a_missing_tag_ask_upstream_once_until_the_ttl_passes(
    setup: tuple[FakeGAR, RunningProxy, ManualClock],
) -> None:
    fake, running, clock = setup
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert [_probe(client, "manifests/next") for _ in range(10)] == [404] * 10
        assert fake.count(kind="manifest") == 1
        lookups = running.services.metrics.registry.get_sample_value(
            "garproxy_cache_lookups_total", {"kind": "manifest", "outcome": "negative"}
        )
        assert lookups == 9
        clock.advance(29)
        assert _probe(client, "manifests/next", "HEAD") == 404
        assert fake.count(kind="manifest") == 1
        clock.advance(1)  # cache.negative_ttl (30 s) is over: upstream is asked again
        assert _probe(client, "manifests/next") == 404
        assert fake.count(kind="manifest") == 2


def test_missing_digests_are_remembered_for_manifests_and_blobs(
    setup: tuple[FakeGAR, RunningProxy, ManualClock],
) -> None:
    fake, running, _ = setup
    digest = sha256(b"never pushed")
    with httpx.Client(base_url=running.url, timeout=30) as client:
        for path in (f"manifests/{digest}", f"blobs/{digest}"):
            statuses = [_probe(client, path, method) for method in ("GET", "HEAD") * 5]
            assert statuses == [404] * 10
    assert fake.count(kind="manifest") == 1
    assert fake.count(kind="blob") == 1


def test_a_push_through_the_proxy_makes_the_tag_pullable_at_once(
    setup: tuple[FakeGAR, RunningProxy, ManualClock],
) -> None:
    fake, running, _ = setup
    image = build_image([make_layer({"app": b"v2"})])
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert _probe(client, "manifests/v2") == 404
        assert _probe(client, f"blobs/{image.config.digest}") == 404
        push_image(running.url, REPO, "v2", image)
        got = client.get(f"/v2/{REPO}/manifests/v2", headers=ACCEPT)
        assert got.status_code == 200, got.text
        assert got.headers["docker-content-digest"] == image.digest
        assert client.get(f"/v2/{REPO}/blobs/{image.config.digest}").content == image.config.data
    # Answered from what was pushed: GAR saw the one probe of the tag, then the push.
    assert fake.count("GET", "manifest") == 1
