"""deploy/monitoring: the alert rules pass ``promtool check rules``, and every series the
rules and the Grafana dashboard query is one the running proxy exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeGarFactory, ProxyFactory, require_binaries

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
OUR_SERIES = re.compile(r"\b((?:garproxy|gar_proxy|process)_[a-z0-9_]+)")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def _exported(url: str) -> set[str]:
    text = httpx.get(url + "/metrics").text
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def _dashboard_queries() -> list[str]:
    dashboard: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def _rule_queries() -> list[str]:
    # One-line exprs (promtool checks the file's structure): no YAML dependency here.
    text = (MONITORING / "alerts.yaml").read_text()
    return re.findall(r"^\s+expr: (.+)$", text, re.MULTILINE)


def test_alert_rules_pass_promtool() -> None:
    require_binaries("promtool")
    promtool = shutil.which("promtool") or "promtool"
    result = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "alerts.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_every_queried_series_is_exported(fake_gar: FakeGarFactory, proxy: ProxyFactory) -> None:
    running = proxy(fake_gar(auth="none").upstream)
    exported = _exported(running.url)
    queries = _dashboard_queries() + _rule_queries()
    assert len(_rule_queries()) == 4
    named = {name for query in queries for name in OUR_SERIES.findall(query)}
    assert len(named) >= 20  # the regex found the queries' series at all
    assert named - exported == set()
