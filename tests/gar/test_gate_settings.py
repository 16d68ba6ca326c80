"""The ``[vulnerability_gate]`` settings: TOML tables, environment JSON, early errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, describe, load_settings
from proxy.gar.errors import as_registry_error
from proxy.gar.policy import GatePolicy
from proxy.gar.vulnerabilities import ScanFailed, ScanTimeout, ScanUnsupported

TOML = """
[vulnerability_gate]
enabled = true
block_severity = "high"
allow = ["cve-2024-1"]
unscanned = "wait"
wait_seconds = "90s"
[vulnerability_gate.repositories."proj/legacy/"]
block_severity = "CRITICAL"
allow = ["CVE-2023-9"]
"""


def test_toml_table_becomes_the_policy_with_per_prefix_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    gate = load_settings(path, env={}).vulnerability_gate
    assert (gate.enabled, gate.block_severity, gate.allow) == (True, "HIGH", ("CVE-2024-1",))
    policy = GatePolicy.from_mapping(gate.policy_table())
    legacy = policy.rule_for("proj/legacy/app")
    assert legacy.block_severity == "CRITICAL" and legacy.allow == {"CVE-2024-1", "CVE-2023-9"}
    assert legacy.unscanned == "wait" and legacy.wait_seconds == 90
    assert policy.rule_for("proj/web/app").block_severity == "HIGH"
    shown = dict(describe(load_settings(path, env={})))
    assert shown["vulnerability_gate.repositories"].startswith('{"proj/legacy/"')


def test_environment_takes_json_overrides_and_comma_separated_cves() -> None:
    env = {
        "GAR_PROXY_VULNERABILITY_GATE_REPOSITORIES": '{"a/b/": {"unscanned": "deny"}}',
        "GAR_PROXY_VULNERABILITY_GATE_ALLOW": "cve-1, CVE-2",
        "GAR_PROXY_APIS_CONTAINER_ANALYSIS": "http://127.0.0.1:9/",
    }
    settings = load_settings(None, env=env)
    assert settings.vulnerability_gate.allow == ("CVE-1", "CVE-2")
    assert settings.vulnerability_gate.enabled is False  # off unless asked
    assert settings.apis.container_analysis == "http://127.0.0.1:9/"
    policy = GatePolicy.from_mapping(settings.vulnerability_gate.policy_table())
    assert policy.rule_for("a/b/c").unscanned == "deny"


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"REPOSITORIES": '{"a/": {"unscanned": "maybe"}}'}, "repositories.a/.unscanned"),
        ({"REPOSITORIES": "not json"}, "expected JSON"),
        ({"BLOCK_SEVERITY": "bad"}, "block_severity"),
        ({"UNSCANNED": "wait", "WAIT_SECONDS": "0"}, "wait_seconds must be positive"),
    ],
)
def test_a_bad_gate_setting_stops_loading_naming_the_key(env: dict[str, str], said: str) -> None:
    full = {f"GAR_PROXY_VULNERABILITY_GATE_{k}": v for k, v in env.items()}
    with pytest.raises(ConfigError, match=said):
        load_settings(None, env=full)


def test_the_gate_needs_an_artifact_registry_upstream() -> None:
    env = {"GAR_PROXY_VULNERABILITY_GATE_ENABLED": "1", "GAR_PROXY_UPSTREAM_URL": "https://r.io"}
    with pytest.raises(ConfigError, match="needs Artifact Registry"):
        load_settings(None, env=env)


def test_gar_errors_have_codes_of_their_own_in_the_table() -> None:
    said = [
        (as_registry_error(e).code.wire, as_registry_error(e).status)
        for e in (ScanTimeout("t"), ScanFailed("f"), ScanUnsupported("u"))
    ]
    assert said == [("SCAN_TIMEOUT", 504), ("SCAN_FAILED", 502), ("SCAN_UNSUPPORTED", 422)]
