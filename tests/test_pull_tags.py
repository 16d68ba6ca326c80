"""Names and pointers: tag TTL and stale tags, tag lists, referrers, and where a name goes.

Tags are answered locally within ``cache.tag_ttl``; after it one upstream HEAD (never a
GET) revalidates; upstream trouble serves the stale tag up to ``cache.max_stale``. These
tests wait for the revalidation (``cache.revalidate_window = 0``); answering from the
cache while it runs in the background is ``tests/test_tag_freshness.py``.
Host-qualified names, containerd's ``?ns=``, configured routes and the metadata lookup
decide which location the fake GAR sees a request at (it counts by location).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.clock import SYSTEM, Clock, ManualClock
from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import build_artifact, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.conftest import FakeGarFactory

REPO = "proj/repo/app"
KEY = f"us-docker.pkg.dev/{REPO}"  # how the index names the repository once resolved
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


def start(tmp_path: Path, url: str, **keys: Any) -> Any:
    return start_clocked(tmp_path, url, SYSTEM, **keys)


def start_clocked(tmp_path: Path, url: str, clock: Clock, **keys: Any) -> Any:
    keys.setdefault("transport__retries", "1")
    keys.setdefault("cache__revalidate_window", "0")
    return run_proxy(proxy_settings(tmp_path, url + "/{location}", **keys), clock=clock)


def client(proxy: RunningProxy) -> httpx.Client:
    return httpx.Client(base_url=proxy.url, timeout=30, verify=False)


def get_tag(http: httpx.Client, tag: str = "1.0", repo: str = REPO) -> httpx.Response:
    return http.get(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT)


def manifest_calls(fake: FakeGAR) -> tuple[int, int]:
    """(HEADs, GETs) of manifests upstream saw."""
    return fake.count("HEAD", "manifest"), fake.count("GET", "manifest")


def stale_served(proxy: RunningProxy) -> float:
    value = proxy.services.metrics.registry.get_sample_value("garproxy_stale_tags_served_total")
    return value or 0.0


# --------------------------------------------------------------------------- tag TTL


def test_within_ttl_nothing_after_it_one_head(fake: FakeGAR, tmp_path: Path) -> None:
    image = build_image([make_layer({"t": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    clock = ManualClock()
    with (
        start_clocked(tmp_path, fake.url, clock, cache__tag_ttl="60s") as proxy,
        client(proxy) as http,
    ):
        assert get_tag(http).content == image.manifest
        assert manifest_calls(fake) == (0, 1)
        fake.reset_counts()
        clock.advance(59.9)
        assert get_tag(http).content == image.manifest
        assert fake.count() == 0
        clock.advance(0.2)  # the TTL ran out
        expired = get_tag(http)
        assert expired.status_code == 200 and expired.content == image.manifest
        assert manifest_calls(fake) == (1, 0)
        assert get_tag(http).status_code == 200  # revalidated: fresh again
        assert manifest_calls(fake) == (1, 0)


def test_revalidation_follows_the_tag_upstream(fake: FakeGAR, tmp_path: Path) -> None:
    first = build_image([make_layer({"t": b"first"})])
    second = build_image([make_layer({"t": b"second"})])
    fake.put_image("us", REPO, "1.0", first)
    with start(tmp_path, fake.url, cache__tag_ttl="0") as proxy, client(proxy) as http:
        assert get_tag(http).content == first.manifest
        fake.reset_counts()
        # Same digest upstream: one HEAD, the body comes from the cache.
        same = get_tag(http)
        assert same.headers["docker-content-digest"] == first.digest
        assert same.content == first.manifest
        assert manifest_calls(fake) == (1, 0)
        head = http.head(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
        assert head.status_code == 200 and head.headers["docker-content-digest"] == first.digest
        assert manifest_calls(fake) == (2, 0)
        # The tag moved: the new manifest is fetched once.
        fake.reset_counts()
        fake.put_image("us", REPO, "1.0", second)
        moved = get_tag(http)
        assert moved.headers["docker-content-digest"] == second.digest
        assert moved.content == second.manifest
        assert manifest_calls(fake) == (1, 1)
        # The tag is gone upstream: so it is here.
        fake.reset_counts()
        fake.delete_tag("us", REPO, "1.0")
        gone = get_tag(http)
        assert gone.status_code == 404
        assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert manifest_calls(fake) == (1, 0)
        assert proxy.call(proxy.services.index.tags.get(KEY, "1.0")) is None
        assert proxy.call(proxy.services.index.tags.names(KEY)) == []
        # The old manifest stays reachable by digest, without upstream.
        by_digest = http.get(f"/v2/{REPO}/manifests/{first.digest}")
        assert by_digest.status_code == 200 and by_digest.content == first.manifest
        assert manifest_calls(fake) == (1, 0)


def test_stale_tag_served_while_upstream_fails_until_max_stale(
    fake: FakeGAR, tmp_path: Path
) -> None:
    image = build_image([make_layer({"s": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    # stale_recheck 0: each request asks upstream (the window has its own test below).
    settings = {"cache__tag_ttl": "0", "cache__max_stale": "1h", "cache__stale_recheck": "0s"}
    failures = [(503, "UNAVAILABLE", 503), (429, "TOOMANYREQUESTS", 429)]
    clock = ManualClock()
    with start_clocked(tmp_path, fake.url, clock, **settings) as proxy, client(proxy) as http:
        assert get_tag(http).status_code == 200
        fake.reset_counts()
        for served, (status, _, _) in enumerate(failures, start=1):
            fake.clear_faults()
            fake.add_fault(Fault(kind="manifest", status=status))
            stale = get_tag(http)
            assert stale.status_code == 200, stale.text
            assert stale.headers["docker-content-digest"] == image.digest
            assert stale.content == image.manifest
            assert stale_served(proxy) == served
        assert manifest_calls(fake) == (4, 0)  # per failure one try and one retry, no GET
        clock.advance(3600.1)  # past max_stale
        for status, code, client_status in failures:
            fake.clear_faults()
            fake.add_fault(Fault(kind="manifest", status=status))
            too_old = get_tag(http)
            assert too_old.status_code == client_status
            assert too_old.json()["errors"][0]["code"] == code
        assert stale_served(proxy) == len(failures)
        assert proxy.call(proxy.services.index.tags.get(KEY, "1.0")) is not None  # kept
        fake.clear_faults()
        assert get_tag(http).status_code == 200  # upstream is back: fine again


def test_a_failed_revalidation_is_not_retried_within_stale_recheck(
    fake: FakeGAR, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = build_image([make_layer({"r": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    settings = {"cache__tag_ttl": "0", "cache__stale_recheck": "10s"}
    clock = ManualClock()
    with start_clocked(tmp_path, fake.url, clock, **settings) as proxy, client(proxy) as http:
        assert get_tag(http).status_code == 200
        fake.reset_counts()
        fake.add_fault(Fault(kind="manifest", status=503))
        for _ in range(5):
            stale = get_tag(http)
            assert stale.status_code == 200 and stale.content == image.manifest
            clock.advance(1.9)  # 9.5 s in all: still within stale_recheck
        assert manifest_calls(fake) == (2, 0)  # the first request: one try, one retry
        assert stale_served(proxy) == 5
        warnings = [r for r in caplog.records if "serving stale tag" in r.getMessage()]
        assert len(warnings) == 1
        clock.advance(0.6)  # the window is over: ask again
        assert get_tag(http).status_code == 200
        assert manifest_calls(fake) == (4, 0)
        fake.clear_faults()
        clock.advance(10.1)
        assert get_tag(http).status_code == 200  # revalidated, the failure forgotten
        assert get_tag(http).status_code == 200
        assert manifest_calls(fake) == (6, 0)
        assert stale_served(proxy) == 6


# --------------------------------------------------------------------------- listings


def test_tag_list_pages_with_links_to_the_proxy(fake: FakeGAR, tmp_path: Path) -> None:
    image = build_image([make_layer({"l": b"1"})])
    for tag in ("a", "b", "c", "d", "e"):
        fake.put_image("us", REPO, tag, image)
    with start(tmp_path, fake.url) as proxy, client(proxy) as http:
        everything = http.get(f"/v2/{REPO}/tags/list")
        listed = everything.json()  # GAR's GCR-shaped list passes through (docs/GAR.md N3)
        assert (listed["name"], listed["tags"]) == (REPO, ["a", "b", "c", "d", "e"])
        assert listed["manifest"][image.digest]["tag"] == ["a", "b", "c", "d", "e"]
        assert "link" not in everything.headers
        pages, url = [], f"/v2/{REPO}/tags/list?n=2"
        while url:
            page = http.get(url)
            assert page.status_code == 200
            pages.append(page.json()["tags"])
            link = page.headers.get("link")
            if link is None:
                break
            assert link.endswith('>; rel="next"')
            url = link[1 : link.index(">")]
            assert url.startswith(f"/v2/{REPO}/tags/list?")  # the proxy, not upstream
        assert pages == [["a", "b"], ["c", "d"], ["e"]]
        after = http.get(f"/v2/{REPO}/tags/list", params={"last": "c"})
        assert after.json()["tags"] == ["d", "e"]
        unknown = http.get("/v2/proj/repo/nothing/tags/list")
        assert unknown.status_code == 404
        assert unknown.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert fake.count("GET", "tags") == 6


def test_referrers_filter_and_outage(tmp_path: Path) -> None:
    fake = FakeGAR(auth="none")  # served by hand: the outage stops it
    image = build_image([make_layer({"r": b"1"})])
    sbom = build_artifact(image, SBOM, b'{"spdx": true}')
    signature = build_artifact(image, SIGNATURE, b"sig")
    fake.put_image("us", REPO, "1.0", image)
    fake.put_image("us", REPO, None, sbom)
    fake.put_image("us", REPO, None, signature)
    url = f"/v2/{REPO}/referrers/{image.digest}"
    serving = fake.serve()
    base = serving.__enter__()
    try:
        with start(tmp_path, base, cache__tag_ttl="0") as proxy, client(proxy) as http:
            assert get_tag(http).status_code == 200
            both = http.get(url)
            assert both.status_code == 200
            assert both.headers["content-type"].startswith(mt.OCI_INDEX)
            assert {d["digest"] for d in both.json()["manifests"]} == {
                sbom.digest,
                signature.digest,
            }
            only = http.get(url, params={"artifactType": SBOM})
            assert [d["digest"] for d in only.json()["manifests"]] == [sbom.digest]
            assert only.json()["manifests"][0]["artifactType"] == SBOM
            assert only.headers["oci-filters-applied"] == "artifactType"
            assert fake.count("GET", "referrers") == 2
            serving.__exit__(None, None, None)  # upstream goes away
            base = ""
            cached = http.get(url, params={"artifactType": SBOM})
            assert cached.status_code == 200 and cached.content == only.content
            assert cached.headers["oci-filters-applied"] == "artifactType"
            assert http.get(url).content == both.content
            stale = get_tag(http)  # and the tag is served stale
            assert stale.status_code == 200 and stale.content == image.manifest
            tags = http.get(f"/v2/{REPO}/tags/list")
            assert tags.status_code == 200 and tags.json()["tags"] == ["1.0"]
            never_seen = http.get(url, params={"artifactType": "application/x-other"})
            assert never_seen.status_code == 502
            assert never_seen.json()["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        if base:
            serving.__exit__(None, None, None)


# --------------------------------------------------------------------------- locations


def test_host_qualified_name_and_containerd_ns_pick_the_location(
    fake: FakeGAR, tmp_path: Path
) -> None:
    one = build_image([make_layer({"e": b"1"})])
    two = build_image([make_layer({"e": b"2"})])
    fake.put_image("europe-west1", "p/r/i", "1.0", one)
    fake.put_image("europe-west1", "p/r/i", "2.0", two)
    with start(tmp_path, fake.url) as proxy, client(proxy) as http:
        qualified = get_tag(http, "1.0", "europe-west1-docker.pkg.dev/p/r/i")
        assert qualified.status_code == 200 and qualified.content == one.manifest
        layer = one.layers[0]
        blob = http.get(f"/v2/europe-west1-docker.pkg.dev/p/r/i/blobs/{layer.digest}")
        assert blob.content == layer.data
        mirrored = http.get(
            "/v2/p/r/i/manifests/2.0",
            params={"ns": "europe-west1-docker.pkg.dev"},
            headers=ACCEPT,
        )
        assert mirrored.status_code == 200 and mirrored.content == two.manifest
        plain = get_tag(http, "1.0", "p/r/i")  # no location named: the default, us
        assert plain.status_code == 404
        unknown = get_tag(http, "1.0", "mars-docker.pkg.dev/p/r/i")
        assert unknown.status_code == 400
        assert unknown.json()["errors"][0]["code"] == "NAME_INVALID"
    assert fake.count("GET", "manifest", location="europe-west1") == 2
    assert fake.count("GET", "blob", location="europe-west1") == 1
    assert fake.count(location="us") == 1
    assert fake.count(location="mars") == 0


def test_location_lookup_once_and_routes_win(fake: FakeGAR, tmp_path: Path) -> None:
    asian = build_image([make_layer({"a": b"asia"})])
    european = build_image([make_layer({"a": b"europe"})])
    fake.put_image("asia", "p/r2/i", "1.0", asian)
    fake.put_image("asia", "p/r2/j", "1.0", asian)
    fake.put_image("asia", "p/r3/i", "1.0", asian)  # the lookup would find this one...
    fake.put_image("europe", "p/r3/i", "1.0", european)  # ...but the route says europe
    settings = {
        "routing__resolve_locations": "true",
        "apis__artifact_registry": fake.url,
        "routing__routes": "p/r3=europe",
    }
    with start(tmp_path, fake.url, **settings) as proxy, client(proxy) as http:
        assert get_tag(http, repo="p/r2/i").content == asian.manifest
        looked_up = fake.count(kind="metadata")
        assert looked_up >= 1
        assert fake.count("GET", "manifest", location="asia") == 1
        assert get_tag(http, repo="p/r2/j").content == asian.manifest  # same repository
        assert get_tag(http, repo="p/r3/i").content == european.manifest
        assert fake.count(kind="metadata") == looked_up
    with start(tmp_path, fake.url, **settings) as proxy, client(proxy) as http:
        fake.reset_counts()
        two = build_image([make_layer({"a": b"asia 2"})])
        fake.put_image("asia", "p/r2/i", "2.0", two)
        assert get_tag(http, "2.0", "p/r2/i").content == two.manifest
        assert fake.count(kind="metadata") == 0  # remembered across a restart
        assert fake.count("GET", "manifest", location="asia") == 1
