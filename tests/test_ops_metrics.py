"""``/metrics`` after a known cold then warm pull: exact hit, miss and byte counts.

Scraped over HTTP and parsed with prometheus-client's own parser, as Prometheus
would read it; no label may carry a repository, digest or URL.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import Fault
from testkit.images import build_image, make_layer, push_image
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_cold_then_warm_pull_shows_exact_hits_misses_and_bytes(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"a": b"1"}), make_layer(size=300_000, seed=4)])
    fake.put_image("us", REPO, "1.0", image)
    running = proxy(fake.upstream)
    blob_bytes = sum(len(b.data) for b in image.blobs)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for _ in range(2):
            assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
            for blob in image.blobs:
                assert http.get(f"/v2/{REPO}/blobs/{blob.digest}").content == blob.data
    pushed = build_image([make_layer({"p": b"2"})])
    push_image(running.url, "proj/repo/pushed", "1", pushed)
    samples = scrape(running.url)

    def cache(kind: str, outcome: str) -> float:
        return value(samples, "garproxy_cache_lookups_total", kind=kind, outcome=outcome)

    assert cache("blob", "miss") == 3 and cache("blob", "hit") == 3
    assert cache("manifest", "miss") == 1 and cache("manifest", "hit") == 1
    assert value(samples, "garproxy_upstream_bytes_fetched_total") == blob_bytes
    assert value(samples, "garproxy_blob_bytes_served_from_cache_total") == blob_bytes
    assert value(samples, "garproxy_bytes_served_total", source="blob") == 2 * blob_bytes
    assert value(samples, "garproxy_upstream_fetches_total", kind="blob") == 3
    assert value(samples, "garproxy_bytes_pushed_total") == sum(len(b.data) for b in pushed.blobs)
    assert value(samples, "garproxy_cache_bytes") >= 0
    assert value(samples, "garproxy_active_fills") == 0
    assert value(samples, "garproxy_upload_sessions") == 0
    ok_gets = value(
        samples, "garproxy_upstream_request_duration_seconds_count",
        operation="blob_get", status_class="2xx",
    )  # fmt: skip
    assert ok_gets == 3
    version = [labels for name, labels in samples if name == "gar_proxy_build_info"]
    assert version and dict(version[0])["version"]
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
    for _, labels in samples:  # bounded labels: nothing a client chose
        for _, label_value in labels:
            assert "sha256:" not in label_value and "/" not in label_value


def test_an_upstream_503_is_counted_retried_and_listed_on_the_status_page(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"e": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    fake.add_fault(Fault(kind="blob", method="GET", status=503, times=1))
    running = proxy(fake.upstream)
    layer = image.layers[0]
    assert httpx.get(f"{running.url}/v2/{REPO}/blobs/{layer.digest}").content == layer.data
    samples = scrape(running.url)
    errors = value(samples, "garproxy_upstream_errors_total", operation="blob_get", reason="5xx")
    assert errors == 1
    assert value(samples, "garproxy_upstream_retries_total", reason="5xx") == 1
    page = httpx.get(running.url + "/").text
    assert "blob_get" in page and "HTTP 503" in page
