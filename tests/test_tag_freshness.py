"""Freshness past the TTL: stale-while-revalidate, tag policies, immutable tags.

A ``ManualClock`` steps the TTLs; the fake GAR counts what reached upstream. Past its
TTL a tag is answered from the cache at once while one app-owned task per tag sends
one HEAD; a tag that moved upstream is swapped only once its new manifest is stored,
so no client sees the old one after another saw the new one, and none sees a mix
(HEAD then GET by digest, an index then its children). Immutable tags (a policy, or
a GAR repository with ``dockerConfig.immutableTags``) are never revalidated.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.clock import ManualClock
from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import Index, build_image, build_index, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.conftest import FakeGarFactory

REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
CLIENTS = 100


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


def start(tmp_path: Path, fake: FakeGAR, clock: ManualClock, **keys: Any) -> Any:
    keys.setdefault("transport__retries", "1")
    settings = proxy_settings(tmp_path, fake.url + "/{location}", **keys)
    return run_proxy(settings, clock=clock)


def settle(proxy: RunningProxy) -> None:
    """Wait for the background revalidations (an event, not a sleep)."""
    proxy.call(proxy.services.manifests.tags.settle())


def revalidations(proxy: RunningProxy, trigger: str, outcome: str) -> float:
    labels = {"trigger": trigger, "outcome": outcome}
    sample = proxy.services.metrics.registry.get_sample_value
    return sample("garproxy_tag_revalidations_total", labels) or 0.0


def lookups(proxy: RunningProxy, outcome: str) -> float:
    labels = {"kind": "manifest", "outcome": outcome}
    sample = proxy.services.metrics.registry.get_sample_value
    return sample("garproxy_cache_lookups_total", labels) or 0.0


def heads(fake: FakeGAR) -> int:
    return fake.count("HEAD", "manifest")


def head_paths(fake: FakeGAR) -> list[str]:
    """What was HEADed upstream (for an assertion's message)."""
    return [r.path for r in list(fake.requests) if r.method == "HEAD" and r.kind == "manifest"]


def sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


# ------------------------------------------------------------ stale-while-revalidate


def test_a_hundred_requests_past_the_ttl_are_answered_at_once_with_one_head(
    fake: FakeGAR, tmp_path: Path
) -> None:
    image = build_image([make_layer({"swr": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    clock = ManualClock()
    with start(tmp_path, fake, clock, cache__tag_ttl="60s") as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
        fake.reset_counts()
        clock.advance(60.5)  # just past the TTL
        # Upstream's HEAD is slow: every client arrives while the revalidation runs.
        fake.add_fault(Fault(method="HEAD", kind="manifest", delay=0.5))

        async def ask(http: httpx.AsyncClient, n: int) -> httpx.Response:
            method = "HEAD" if n % 3 == 0 else "GET"
            return await http.request(method, f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)

        async def main() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30, limits=limits) as http:
                return await asyncio.gather(*(ask(http, n) for n in range(CLIENTS)))

        answers = asyncio.run(main())
        assert [a.status_code for a in answers] == [200] * CLIENTS
        assert {a.headers["docker-content-digest"] for a in answers} == {image.digest}
        assert all(a.content == image.manifest for a in answers if a.request.method == "GET")
        assert heads(fake) == 1
        assert lookups(proxy, "revalidated") == 0  # none waited for upstream
        assert lookups(proxy, "revalidating") + lookups(proxy, "hit") == CLIENTS
        settle(proxy)
        assert heads(fake) == 1 and fake.count("GET", "manifest") == 0
        assert revalidations(proxy, "background", "unchanged") == 1
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
        assert heads(fake) == 1  # verified now: fresh again


@dataclass
class Seen:
    """One client's walk: when it started and ended (a shared step counter) and which
    index digest the tag gave it."""

    start: int
    end: int
    digest: str


def _index(name: bytes) -> Index:
    return build_index(
        [
            build_image([make_layer({"p": name + b"-amd64"})], architecture="amd64"),
            build_image([make_layer({"p": name + b"-arm64"})], architecture="arm64"),
        ]
    )


async def _walk(http: httpx.AsyncClient, n: int, steps: itertools.count[int]) -> Seen:
    """HEAD the tag then GET that digest, or GET the tag; then every child by digest.
    Every body must hash to the digest it was asked or answered for."""
    start = next(steps)
    if n % 2:
        head = await http.head(f"/v2/{REPO}/manifests/latest", headers=ACCEPT)
        assert head.status_code == 200
        digest = head.headers["docker-content-digest"]
        got = await http.get(f"/v2/{REPO}/manifests/{digest}", headers=ACCEPT)
    else:
        got = await http.get(f"/v2/{REPO}/manifests/latest", headers=ACCEPT)
        digest = got.headers["docker-content-digest"]
    end = next(steps)
    assert got.status_code == 200 and sha(got.content) == digest
    for child in json.loads(got.content)["manifests"]:
        answer = await http.get(f"/v2/{REPO}/manifests/{child['digest']}", headers=ACCEPT)
        assert answer.status_code == 200 and sha(answer.content) == child["digest"]
    return Seen(start, end, digest)


def test_a_moved_tag_is_served_after_the_background_revalidation_and_never_mixed(
    fake: FakeGAR, tmp_path: Path
) -> None:
    old, new = _index(b"old"), _index(b"new")
    fake.put_image("us", REPO, "latest", old)
    clock = ManualClock()
    with start(tmp_path, fake, clock, cache__tag_ttl="60s") as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            assert http.get(f"/v2/{REPO}/manifests/latest", headers=ACCEPT).status_code == 200
        fake.put_image("us", REPO, "latest", new)
        fake.reset_counts()
        clock.advance(61)
        # The new index arrives slowly: clients keep coming between HEAD and swap.
        fake.add_fault(Fault(method="GET", path=f"/manifests/{new.digest}$", delay=0.3))
        steps = itertools.count()

        async def main() -> list[Seen]:
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30, limits=limits) as http:
                first = await _walk(http, 0, steps)  # starts the revalidation
                rest = await asyncio.gather(*(_walk(http, n, steps) for n in range(CLIENTS)))
                return [first, *rest]

        seen = asyncio.run(main())
        settle(proxy)
        assert seen[0].digest == old.digest  # answered at once, from the cache
        assert {s.digest for s in seen} <= {old.digest, new.digest}
        # Once one client had the new index, no client that started later got the old.
        first_new = min((s.end for s in seen if s.digest == new.digest), default=None)
        late_old = [s for s in seen if s.digest == old.digest and first_new is not None]
        assert all(s.start < first_new for s in late_old), (first_new, late_old)  # type: ignore[operator]
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            now = http.get(f"/v2/{REPO}/manifests/latest", headers=ACCEPT)
        assert now.headers["docker-content-digest"] == new.digest
        # One revalidation for all of them, and no HEAD to scope a child a client
        # found while its fetch was still storing it.
        assert heads(fake) == 1, head_paths(fake)
        assert fake.count("GET", "manifest", path=f"/manifests/{new.digest}$") == 1
        assert fake.count("GET", "manifest", path="/manifests/latest$") == 0
        assert revalidations(proxy, "background", "changed") == 1


def test_a_failed_background_revalidation_keeps_the_stale_rules(
    fake: FakeGAR, tmp_path: Path
) -> None:
    image = build_image([make_layer({"f": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    clock = ManualClock()
    keys = {"cache__tag_ttl": "60s", "cache__stale_recheck": "10s", "cache__max_stale": "1h"}
    with (
        start(tmp_path, fake, clock, **keys) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as http,
    ):
        assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
        fake.reset_counts()
        fault = fake.add_fault(Fault(kind="manifest", status=503))
        clock.advance(61)
        for _ in range(3):
            answer = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
            assert answer.status_code == 200 and answer.content == image.manifest
            settle(proxy)
        assert heads(fake) == 2  # one try and one retry, then stale_recheck holds
        assert revalidations(proxy, "background", "failed") == 1
        clock.advance(3600)  # past max_stale: a request waits, and gets upstream's error
        assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 503
        fake.clear_faults()
        assert fault.hits >= 3
        assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
        assert revalidations(proxy, "waited", "unchanged") == 1


def test_a_tag_gone_or_refused_in_the_background_reaches_the_next_client(
    fake: FakeGAR, tmp_path: Path
) -> None:
    image = build_image([make_layer({"g": b"1"})])
    fake.put_image("us", REPO, "gone", image)
    fake.put_image("us", REPO, "refused", image)
    clock = ManualClock()
    with (
        start(tmp_path, fake, clock, cache__tag_ttl="60s") as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as http,
    ):
        for tag in ("gone", "refused"):
            assert http.get(f"/v2/{REPO}/manifests/{tag}", headers=ACCEPT).status_code == 200
        fake.delete_tag("us", REPO, "gone")
        fake.add_fault(Fault(method="HEAD", path="/manifests/refused$", status=403))
        clock.advance(61)
        for tag in ("gone", "refused"):  # answered from the cache while it is asked
            assert http.get(f"/v2/{REPO}/manifests/{tag}", headers=ACCEPT).status_code == 200
        settle(proxy)
        gone = http.get(f"/v2/{REPO}/manifests/gone", headers=ACCEPT)
        assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        refused = http.get(f"/v2/{REPO}/manifests/refused", headers=ACCEPT)
        assert refused.status_code == 403  # the refusal is not hidden by the cache
        assert revalidations(proxy, "background", "gone") == 1
        assert revalidations(proxy, "background", "failed") == 1


# ------------------------------------------------------------ tag policies, immutable tags


def _pull_every_minute_for_an_hour(
    proxy: RunningProxy, clock: ManualClock, tags: list[str]
) -> None:
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for _ in range(60):
            clock.advance(61)
            for tag in tags:
                answer = http.get(f"/v2/{REPO}/manifests/{tag}", headers=ACCEPT)
                assert answer.status_code == 200
            settle(proxy)


def test_policies_make_semver_tags_immutable_and_latest_short_lived(
    fake: FakeGAR, tmp_path: Path
) -> None:
    image = build_image([make_layer({"p": b"1"})])
    for tag in ("v1.2.3", "latest", "nightly"):
        fake.put_image("us", REPO, tag, image)
    policies = [
        {"tag": r"v?\d+\.\d+\.\d+", "immutable": True},
        {"repository": "proj/repo", "tag": "latest", "ttl": "30s"},
    ]
    clock = ManualClock()
    keys = {"cache__tag_ttl": "10m", "cache__tag_policies": json.dumps(policies)}
    with start(tmp_path, fake, clock, **keys) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            for tag in ("v1.2.3", "latest", "nightly"):
                assert http.get(f"/v2/{REPO}/manifests/{tag}", headers=ACCEPT).status_code == 200
        fake.reset_counts()
        _pull_every_minute_for_an_hour(proxy, clock, ["v1.2.3", "latest", "nightly"])
    assert fake.count("HEAD", "manifest", path="/manifests/v1.2.3$") == 0
    assert fake.count("HEAD", "manifest", path="/manifests/latest$") == 60  # 30 s < a minute
    assert fake.count("HEAD", "manifest", path="/manifests/nightly$") == 6  # the 10 min default
    assert fake.count("GET", "manifest") == 0


def test_a_gar_repository_with_immutable_tags_is_never_revalidated(
    fake: FakeGAR, tmp_path: Path
) -> None:
    fake.add_repository("us", "proj", "repo", immutable_tags=True)
    fake.add_repository("us", "proj", "mutable")
    image = build_image([make_layer({"i": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    fake.put_image("us", "proj/mutable/app", "1.0", image)
    keys = {
        "routing__check_repositories": "true",
        "apis__artifact_registry": fake.url,
        "cache__tag_ttl": "60s",
    }
    clock = ManualClock()
    with (
        start(tmp_path, fake, clock, **keys) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as http,
    ):
        for repo in (REPO, "proj/mutable/app"):
            assert http.get(f"/v2/{repo}/manifests/1.0", headers=ACCEPT).status_code == 200
        fake.reset_counts()
        for _ in range(60):  # an hour, a pull a minute
            clock.advance(61)
            for repo in (REPO, "proj/mutable/app"):
                assert http.get(f"/v2/{repo}/manifests/1.0", headers=ACCEPT).status_code == 200
            settle(proxy)
    assert fake.count("HEAD", "manifest", path=f"/v2/{REPO}/") == 0
    assert fake.count("GET", "manifest", path=f"/v2/{REPO}/") == 0
    assert fake.count("HEAD", "manifest", path="/v2/proj/mutable/") == 60
