"""A real Prometheus (Debian's ``prometheus``) scraping the test proxy sees every series the
Grafana dashboard queries, and loads deploy/monitoring/alerts.yaml with its rules healthy.

``test_ops_monitoring`` checks the names against the exposition text; this checks what a
Prometheus actually stores: a labelled counter that was never incremented has no series,
so a panel over it would say "No data" rather than 0.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from proxy.oci import mediatypes as mt
from testkit.images import build_image, make_layer
from testkit.proxyharness import pull_twice
from testkit.realclients import free_port
from tests.conftest import FakeGarFactory, ProxyFactory, require_binaries
from tests.test_ops_monitoring import MONITORING, OUR_SERIES, RULES, _dashboard_queries

REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
T = TypeVar("T")


@contextlib.contextmanager
def prometheus(
    tmp_path: Path, target: str, rules: Path = MONITORING / "alerts.yaml", job: str = "gar-proxy"
) -> Iterator[str]:
    """Prometheus scraping ``target`` (host:port) every second, with ``rules`` (our alert
    rules unless a test gives a copy), as scrape job ``job``."""
    require_binaries("prometheus")
    config = {  # JSON is YAML: no YAML dependency for the test
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()  # Prometheus has no port 0: the small race is acceptable
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # by its PID: only the process this test started
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _poll(check: Callable[[], T | None], seconds: float, what: Callable[[], str]) -> T:
    deadline = time.monotonic() + seconds
    while True:
        # Until it is up, Prometheus refuses connections or answers 503 in plain text.
        with contextlib.suppress(httpx.HTTPError, ValueError):
            found = check()
            if found is not None:
                return found
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)  # polling an outside server's state: there is no event to wait on


def _pull_cold_then_warm(fake_gar: FakeGarFactory, proxy: ProxyFactory) -> str:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"a": b"1"}), make_layer(size=100_000, seed=4)])
    fake.put_image("us", REPO, "1.0", image)
    running = proxy(fake.upstream)
    pull_twice(running.url, REPO, "1.0", [(b.digest, b.data) for b in image.blobs])
    return running.url.removeprefix("http://")


def test_prometheus_scraping_the_proxy_sees_the_dashboard_series_and_loads_the_rules(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    target = _pull_cold_then_warm(fake_gar, proxy)
    wanted = {name for query in _dashboard_queries() for name in OUR_SERIES.findall(query)}
    assert len(wanted) >= 20
    with prometheus(tmp_path, target) as url, httpx.Client(base_url=url, timeout=5) as api:
        seen: set[str] = set()

        def names() -> set[str] | None:
            answer = api.get("/api/v1/label/__name__/values").json()
            seen.update(answer["data"])
            return seen if wanted <= seen else None

        _poll(names, 30, lambda: f"never stored: {sorted(wanted - seen)}")
        rules: list[dict[str, Any]] = []

        def healthy() -> list[dict[str, Any]] | None:
            groups = api.get("/api/v1/rules").json()["data"]["groups"]
            rules[:] = [rule for group in groups for rule in group["rules"]]
            ok = len(rules) == RULES and all(rule["health"] == "ok" for rule in rules)
            return rules if ok else None

        _poll(healthy, 15, lambda: f"rules: {[(r['name'], r['health']) for r in rules]}")
        up = api.get("/api/v1/query", params={"query": "up"}).json()["data"]["result"]
        assert [sample["value"][1] for sample in up] == ["1"]
