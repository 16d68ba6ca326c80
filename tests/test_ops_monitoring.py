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
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeGarFactory, ProxyFactory, require_binaries

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
OUR_SERIES = re.compile(r"\b((?:garproxy|gar_proxy|process)_[a-z0-9_]+)")
RULES = 6
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
    assert f"SUCCESS: {RULES} rules found" in result.stdout


def test_every_queried_series_is_exported(fake_gar: FakeGarFactory, proxy: ProxyFactory) -> None:
    running = proxy(fake_gar(auth="none").upstream)
    exported = _exported(running.url)
    queries = _dashboard_queries() + _rule_queries()
    assert len(_rule_queries()) == RULES
    named = {name for query in queries for name in OUR_SERIES.findall(query)}
    assert len(named) >= 20  # the regex found the queries' series at all
    assert named - exported == set()


def _annotations(alert: str, instance: str) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for ``instance`` (rules whose
    text quotes ``$value`` are not expected to fire here)."""
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"][0]["rules"]
    (rule,) = [r for r in rules if r["alert"] == alert]
    return {
        key: text.replace("{{ $labels.instance }}", instance)
        for key, text in rule["annotations"].items()
    }


def _fires(alert: str, at: str, labels: dict[str, str], severity: str) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [
            {
                "exp_labels": {**labels, "severity": severity},
                "exp_annotations": _annotations(alert, labels["instance"]),
            }
        ],
    }


def _silent(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


ALERTS = ["GarProxyDown", "GarProxyNotReady", "GarProxyUpstreamDown", "GarProxyUpstreamErrors",
          "GarProxyCredentialFailures", "GarProxyCachePassingThrough"]  # fmt: skip
CACHE = {"job": "registry-cache", "instance": "a:5000"}  # not "gar-proxy": no job is assumed


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in {**CACHE, **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def test_the_shipped_rules_fire_with_their_real_durations(tmp_path: Path) -> None:
    """``promtool test rules`` over the shipped file, ``for:`` durations as they are."""
    require_binaries("promtool")
    healthy_at_cap = [  # an LRU cache at its cap, upstream fine, for an hour: no alert
        _series("up", "1x60"),
        _series("gar_proxy_build_info", "1x60", version="0.1.0"),
        _series("garproxy_ready", "1x60"),
        _series("garproxy_upstream_up", "1x60"),
        _series("garproxy_cache_bytes", "1000x60"),
        _series("garproxy_cache_max_bytes", "1000x60"),
        _series("garproxy_upstream_errors_total", "0x60", operation="blob_get", reason="5xx"),
        _series("garproxy_credential_failures_total", "0x60", kind="google"),
        _series("garproxy_cache_lookups_total", "0+10x60", kind="blob", outcome="hit"),
        _series("garproxy_cache_lookups_total", "0x60", kind="blob", outcome="passthrough"),
        # Another job's target that is down: not a gar-proxy, no GarProxyDown.
        {"series": 'up{job="node",instance="b:9100"}', "values": "0x60"},
    ]
    outage = [  # upstream gone from minute 1, the proxy still serving and ready
        _series("garproxy_upstream_up", "1 0x30"),
        _series("garproxy_ready", "1x30"),
    ]
    crash = [  # the process gone from minute 3: its series go stale, up drops
        _series("up", "1 1 1 0x20"),
        _series("gar_proxy_build_info", "1 1 1 _x20", version="0.1.0"),
        _series("garproxy_ready", "1 0x20", instance="b:5000"),
    ]
    tests = [
        {"interval": "1m", "input_series": healthy_at_cap,
         "alert_rule_test": [_silent(alert, "60m") for alert in ALERTS]},
        {"interval": "1m", "input_series": outage,
         "alert_rule_test": [
             _silent("GarProxyUpstreamDown", "10m"),  # pending: for 10m from minute 1
             _fires("GarProxyUpstreamDown", "12m", CACHE, "warning"),
             _silent("GarProxyNotReady", "20m"),
         ]},
        {"interval": "1m", "input_series": crash,
         "alert_rule_test": [
             _silent("GarProxyDown", "7m"),
             _fires("GarProxyDown", "9m", CACHE, "critical"),
             _fires("GarProxyNotReady", "7m", {**CACHE, "instance": "b:5000"}, "critical"),
         ]},
    ]  # fmt: skip
    (tmp_path / "alerts.yaml").write_text((MONITORING / "alerts.yaml").read_text())
    spec = {"rule_files": ["alerts.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "alerts_test.yaml").write_text(json.dumps(spec))  # JSON is YAML
    promtool = shutil.which("promtool") or "promtool"
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
