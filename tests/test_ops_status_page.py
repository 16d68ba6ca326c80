"""The status page at ``/`` in headless Chromium: it loads and shows what ``/metrics``
reports after a known pull (cache size, hits, misses, bytes saved), the top
repository, the credential source and the version; never a token."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from proxy.oci import mediatypes as mt
from testkit.images import build_image, make_layer
from testkit.proxyharness import pull_twice
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
