"""The status page at ``/`` in headless Chromium: it loads and shows what ``/metrics``
reports after a known pull (cache size, hits, misses, bytes saved), the top
repository, the credential source and the version; never a token. And its live parts:
uptime, readiness, the upstream's state, fills and uploads in progress, the last hour."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from proxy.clock import ManualClock
from proxy.oci import mediatypes as mt
from testkit.fakes.gar import Fault
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, pull_twice, run_proxy
from tests.conftest import FakeGarFactory, ProxyFactory, require_binaries
from tests.test_ops_metrics import scrape, value

REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage",
)  # fmt: skip


@contextlib.contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    require_binaries("chromium", "chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def _poll(ready: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not ready():  # another thread's progress: there is no event to wait on here
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


@pytest.mark.timeout(120)
def test_status_page_shows_what_metrics_report(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"a": b"1"}), make_layer(size=200_000, seed=5)])
    fake.put_image("us", REPO, "1.0", image)
    running = proxy(fake.upstream)
    pull_twice(running.url, REPO, "1.0", [(b.digest, b.data) for b in image.blobs])
    samples = scrape(running.url)
    hits = sum(
        value(samples, "garproxy_cache_lookups_total", kind=k, outcome="hit")
        for k in ("blob", "manifest")
    )
    misses = sum(
        value(samples, "garproxy_cache_lookups_total", kind=k, outcome="miss")
        for k in ("blob", "manifest")
    )
    assert (hits, misses) == (4, 4)
    expected = {
        "cache-bytes": value(samples, "garproxy_cache_bytes"),
        "cache-hits": hits,
        "cache-misses": misses,
        "bytes-saved": value(samples, "garproxy_blob_bytes_served_from_cache_total"),
        "bytes-fetched": value(samples, "garproxy_upstream_bytes_fetched_total"),
    }
    assert expected["cache-bytes"] > 0 and expected["bytes-saved"] > 0

    with chromium() as browser:
        browser.get(running.url + "/")
        assert browser.title == "gar-proxy"
        for element_id, number in expected.items():
            element = browser.find_element(By.ID, element_id)
            assert float(element.get_attribute("data-value") or "nan") == number, element_id
        saved = browser.find_element(By.ID, "bytes-saved").text
        assert f"({expected['bytes-saved']:.0f} bytes)" in saved and "KiB" in saved
        assert browser.find_element(By.ID, "hit-ratio").text == "50.0%"
        assert REPO in browser.find_element(By.ID, "top-repositories").text
        assert "anonymous" in browser.find_element(By.ID, "credentials").text
        version = next(s for s in samples if s[0] == "gar_proxy_build_info")
        assert browser.find_element(By.ID, "version").text == dict(version[1])["version"]


def _pending_fill(running: RunningProxy) -> int:
    fills = running.services.cache.fills.running()
    return fills[0].written if fills else 0


@pytest.mark.timeout(120)
def test_status_page_shows_health_the_last_hour_and_what_is_in_progress(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> None:
    """Uptime, readiness and the upstream's state; a fill and an upload in progress with
    their progress; the last hour's requests and bytes as an SVG drawn by the server,
    a bar per minute of the proxy's (stepped) clock."""
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"a": b"1"}), make_layer(size=200_000, seed=5)])
    # 12 chunks of 256 KiB, slowly: the fill writes (and shows) each MiB as it lands.
    slow = build_image([make_layer(size=3 * 1024 * 1024, seed=9)])
    fake.put_image("us", REPO, "1.0", image)
    fake.put_image("us", REPO, "slow", slow)
    (big,) = [b for b in slow.blobs if len(b.data) > 3_000_000]
    fake.add_fault(Fault(kind="blob", path=big.digest, slow_body=0.25))
    clock = ManualClock()
    with run_proxy(proxy_settings(tmp_path, fake.upstream), clock=clock) as running:
        pull_twice(running.url, REPO, "1.0", [(b.digest, b.data) for b in image.blobs])
        first_minute = running.services.metrics.activity.series()[-1]
        clock.advance(120)  # two minutes later: one more request, in a bar of its own
        assert httpx.get(f"{running.url}/v2/{REPO}/manifests/1.0", headers=ACCEPT).is_success
        with ThreadPoolExecutor(1) as pool:  # a fill held up by a slow upstream body
            filling = pool.submit(httpx.get, f"{running.url}/v2/{REPO}/blobs/{big.digest}",
                                  timeout=60)  # fmt: skip
            _poll(lambda: _pending_fill(running) > 0)
            with httpx.Client(base_url=running.url, timeout=30) as client:
                started = client.post(f"/v2/{REPO}/blobs/uploads/")
                assert started.status_code == 202, started.text
                patched = client.patch(
                    started.headers["location"],
                    content=b"x" * 1000,
                    headers={"Content-Range": "0-999", "Content-Type": "application/octet-stream"},
                )
                assert patched.status_code == 202, patched.text
            with chromium() as browser:
                browser.get(running.url + "/")
                uptime = browser.find_element(By.ID, "uptime").get_attribute("data-value")
                ready = browser.find_element(By.ID, "ready")
                upstream = browser.find_element(By.ID, "upstream-state")
                fill = browser.find_element(By.CSS_SELECTOR, "#in-progress tr.fill")
                progress = fill.find_element(By.TAG_NAME, "progress")
                upload = browser.find_element(By.CSS_SELECTOR, "#in-progress tr.upload")
                bars = browser.find_elements(By.CSS_SELECTOR, "#chart-requests rect")
                sent = browser.find_elements(By.CSS_SELECTOR, "#chart-bytes rect")
                heights = [float(b.get_attribute("height") or 0) for b in bars]
                counts = [int(b.get_attribute("data-value") or -1) for b in bars]
                progress_value = int(progress.get_attribute("value") or 0)
                progress_max = int(progress.get_attribute("max") or 0)
                texts = (ready.text, upstream.get_attribute("data-value"), upload.text)
                upload_value = upload.get_attribute("data-value")
                sent_values = [int(b.get_attribute("data-value") or -1) for b in sent]
            assert filling.result().content == big.data
    assert uptime == "120"
    assert texts[0] == "yes" and texts[1] == "up"
    assert 0 < progress_value <= progress_max == len(big.data)
    assert upload_value == "1000" and "1000 bytes received" in texts[2]
    assert len(bars) == len(sent) == 60
    # The first minute's pulls two bars back, the later request in the current minute.
    assert counts[-3] == first_minute[1] > 0 and counts[-2] == 0 and counts[-1] >= 1
    assert sent_values[-3] == first_minute[2]
    assert heights[-3] > 0 and heights[-2] == 0 and max(heights) <= 60
