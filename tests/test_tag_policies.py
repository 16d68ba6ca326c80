"""``[[tag_policies]]``: parsed and checked at start-up, one line per mistake; first
match wins. (Their effect on upstream traffic: ``tests/test_tag_freshness.py``.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, describe, load_settings
from proxy.config.tag_policies import TagPolicies, TagRule, parse_tag_policies

TOML = """
[cache]
tag_ttl = "2m"

[[tag_policies]]
tag = 'v?\\d+\\.\\d+\\.\\d+'
immutable = true

[[tag_policies]]
repository = "proj/ci"
tag = "latest"
ttl = "30s"

[[tag_policies]]
repository = "proj/frozen/"
immutable = true
"""


def test_toml_rules_in_order_first_match_wins(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(TOML)
    settings = load_settings(config, env={"HOME": str(tmp_path)})
    rules = settings.cache.tag_policies
    assert [r.ttl for r in rules] == [None, 30.0, None]
    assert rules[2].repository == "proj/frozen"  # slashes at the ends do not matter
    policy = TagPolicies(rules, settings.cache.tag_ttl)
    assert policy.ttl("proj/ci/runner", "1.2.3") is None  # the first rule, not the second
    assert policy.ttl("proj/ci/runner", "latest") == 30.0
    assert policy.ttl("proj/ci/runner/sub", "latest") == 30.0  # nested image names
    assert policy.ttl("proj/cix/runner", "latest") == 120.0  # whole segments only
    assert policy.ttl("proj/ci/runner", "latest-rc") == 120.0  # the whole tag must match
    assert policy.ttl("proj/frozen/x", "anything") is None
    assert policy.ttl("other/repo/x", "v1.2") == 120.0
    shown = dict(describe(settings))["cache.tag_policies"]
    assert "repository proj/ci tag /latest/: ttl 30s" in shown


def test_environment_takes_the_same_rules_as_json(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "GAR_PROXY_CACHE_TAG_POLICIES": '[{"tag": "latest", "ttl": "10s"}]',
    }
    rules = load_settings(env=env).cache.tag_policies
    assert rules == (TagRule("", "latest", 10.0),)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"tag": "[unclosed", "ttl": "1m"}], "rule 1: tag '[unclosed' is not a regex"),
        ([{"tag": "x", "ttl": "1m"}, {"tags": "y", "ttl": "1m"}], "rule 2: unknown key 'tags'"),
        ([{"tag": "x"}], "rule 1: give either ttl or immutable = true"),
        ([{"tag": "x", "ttl": "1m", "immutable": True}], "give either ttl or immutable"),
        ([{"tag": "x", "ttl": "soon"}], "rule 1: ttl: expected a duration"),
        ([{"tag": "x", "immutable": "perhaps"}], "rule 1: immutable: expected"),
        ([{"repository": "a//b", "ttl": "1m"}], "needs non-empty path segments"),
        (["latest"], "rule 1: expected a table"),
    ],
)
def test_a_bad_rule_is_named(rules: list[object], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_tag_policies(rules)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_bad_rule_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[tag_policies]]\ntag = "(oops"\nttl = "1m"\n')
    with pytest.raises(ConfigError, match=r"^cache\.tag_policies \(.*\): rule 1: tag"):
        load_settings(config, env={"HOME": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--offline", "--config", str(config), "config", "check"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "rule 1: tag '(oops' is not a regex" in lines[0], lines
