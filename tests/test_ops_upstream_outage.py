"""Readiness means "can serve": an upstream outage leaves the proxy ready and serving its
cache (stale tags included), drops ``garproxy_upstream_up``, and the shipped alert rules,
loaded in a real Prometheus scraping the proxy, fire and clear with it.

The proxy runs on a ``SteppedClock``: its background upstream check sleeps
``upstream.check_interval`` on it, so the test moves time by exactly one interval after
the upstream comes back and the gauge must have recovered; nothing waits on wall time
but Prometheus, which is polled (bounded) for what it evaluated. The rules are the
shipped file with every ``for:`` set to 0 s (the real durations are held by
``promtool test rules`` in ``test_ops_monitoring``), and the scrape job is not called
"gar-proxy": no rule may depend on a job name.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from proxy.oci import mediatypes as mt
from testkit.clocks import SteppedClock
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.test_ops_monitoring import MONITORING
from tests.test_ops_prometheus import _poll, prometheus

REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
INTERVAL = 30.0
TAG_TTL = 60.0
JOB = "registry-cache"


def _quick_rules(tmp_path: Path) -> Path:
    rules: dict[str, Any] = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    path = tmp_path / "alerts-for-0s.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def _gauge(running: RunningProxy, name: str) -> float | None:
    return running.services.metrics.registry.get_sample_value(name)


def _wait_gauge(running: RunningProxy, name: str, value: float) -> None:
    _poll(
        lambda: True if _gauge(running, name) == value else None,
        10,
        lambda: f"{name} is {_gauge(running, name)}, not {value}",
    )


def _firing(api: httpx.Client) -> set[str]:
    alerts = api.get("/api/v1/alerts").json()["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def _pull(url: str, image: Any) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as client:
        manifest = client.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
        for blob in image.blobs:
            assert client.get(f"/v2/{REPO}/blobs/{blob.digest}").content == blob.data
    return manifest


@pytest.mark.timeout(180)
def test_an_upstream_outage_keeps_the_proxy_ready_and_the_alerts_follow_it(
    tmp_path: Path,
) -> None:
    clock = SteppedClock()
    fake = FakeGAR(auth="none")
    image = build_image([make_layer({"a": b"1"}), make_layer(size=50_000, seed=3)])
    fake.put_image("us", REPO, "1.0", image)
    upstream = contextlib.ExitStack()
    url = upstream.enter_context(fake.serve())
    port = urlsplit(url).port
    assert port is not None
    settings = proxy_settings(
        tmp_path, fake.upstream, upstream__check_interval=f"{INTERVAL}s",
        cache__tag_ttl=f"{TAG_TTL}s", transport__retries="0",
        cache__revalidate_window="0",  # a request past the TTL asks upstream: served stale
    )  # fmt: skip
    with (
        upstream,
        run_proxy(settings, clock=clock) as running,
        prometheus(tmp_path, running.url.removeprefix("http://"), _quick_rules(tmp_path), JOB)
        as prom,
        httpx.Client(base_url=prom, timeout=5) as api,
    ):  # fmt: skip
        health = running.app.state.health
        _poll(lambda: clock.sleepers or None, 10, lambda: "the check loop never parked")
        assert _pull(running.url, image).status_code == 200
        assert (_gauge(running, "garproxy_upstream_up"), _gauge(running, "garproxy_ready")) == (
            1,
            1,
        )
        _poll(lambda: api.get("/api/v1/query", params={"query": "garproxy_upstream_up"})
              .json()["data"]["result"] or None, 30, lambda: "never scraped")  # fmt: skip
        assert _firing(api) == set()

        upstream.close()  # the upstream dies: connections are refused from now on
        clock.advance(TAG_TTL + 1)  # past the tag's TTL, and past one check interval
        _wait_gauge(running, "garproxy_upstream_up", 0)
        ready = httpx.get(running.url + "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["upstream"]["state"] == "down"
        stale = _pull(running.url, image)  # the expired tag, served stale from the cache
        assert stale.status_code == 200 and stale.headers["docker-content-digest"] == image.digest
        assert running.services.metrics.sample("garproxy_stale_tags_served_total") >= 1
        assert _gauge(running, "garproxy_ready") == 1
        _poll(lambda: "GarProxyUpstreamDown" in _firing(api) or None, 30,
              lambda: f"firing: {_firing(api)}")  # fmt: skip
        assert "GarProxyNotReady" not in _firing(api)
        assert "GarProxyDown" not in _firing(api)

        upstream.enter_context(fake.serve(port=port))  # back, at the same address
        clock.advance(INTERVAL)  # one check interval is enough to see it
        _wait_gauge(running, "garproxy_upstream_up", 1)
        assert health.upstream_state.state == "up"
        _poll(lambda: "GarProxyUpstreamDown" not in _firing(api) or None, 30,
              lambda: f"still firing: {_firing(api)}")  # fmt: skip
        assert _firing(api) == set()
