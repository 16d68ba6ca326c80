from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, describe, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_environment_overrides_toml_and_flags_override_both(tmp_path: Path) -> None:
    config = write(
        tmp_path, '[cache]\nmax_size = "1GiB"\ntag_ttl = "5m"\n[routing]\nlocation = "europe"\n'
    )
    env = {"HOME": str(tmp_path), "GAR_PROXY_CACHE_MAX_SIZE": "2GiB", "GAR_LOCATION": "asia"}
    settings = load_settings(config, env=env, overrides={"cache.tag_ttl": "10s"})
    assert settings.cache.max_size == 2 * 1024**3
    assert settings.routing.location == "asia"
    assert settings.cache.tag_ttl == 10.0
    assert settings.cache.dir == tmp_path / ".cache" / "gar-proxy"


def test_seed_environment_names(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "GCLOUD_PROJECT": "p1",
        "GAR_TIMEOUT_SECONDS": "12",
        "GAR_SERVICE_ACCOUNT_KEY": '{"type": "service_account"}',
    }
    settings = load_settings(env=env)
    assert settings.gcp.project_id == "p1"
    assert settings.transport.timeout == 12.0
    rows = dict(describe(settings))
    assert rows["gcp.service_account_key"] == "<redacted>"
    assert "service_account" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GAR_PROXY_CACHE_MAX_SIZE": "lots"}, "cache.max_size (GAR_PROXY_CACHE_MAX_SIZE)"),
        ({"GAR_LOCATION": "mars-north1"}, "routing.location (GAR_LOCATION)"),
        ({"GAR_PROXY_SERVER_LISTEN": "localhost"}, "server.listen"),
        ({"GAR_PROXY_UPSTREAM_AUTH": "kerberos"}, "upstream.auth"),
        ({"GAR_PROXY_CACHE_OFFLINE": "maybe"}, "cache.offline"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env=env)
    assert fragment in str(raised.value)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cache\.colour"):
        load_settings(write(tmp_path, '[cache]\ncolour = "red"\n'), env={})


def test_bad_value_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        # --offline: config check also checks credentials and the upstream, and this
        # test must not depend on reaching Google.
        [sys.executable, "-m", "proxy", "--offline", "config", "check"],
        env={"HOME": str(tmp_path), "GAR_PROXY_CACHE_TAG_TTL": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cache.tag_ttl (GAR_PROXY_CACHE_TAG_TTL)" in lines[0]


def test_config_check_prints_effective_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        # --offline: config check also checks credentials and the upstream, and this
        # test must not depend on reaching Google.
        [sys.executable, "-m", "proxy", "--offline", "config", "check"],
        env={
            "HOME": str(tmp_path),
            "GAR_PROXY_UPSTREAM_PASSWORD": "hunter2",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "cache.max_size" in result.stdout and "hunter2" not in result.stdout


def test_a_misspelt_gar_proxy_variable_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={"GAR_PROXY_CACHE_MAXSIZE": "1GiB"})
    assert str(raised.value) == (
        "GAR_PROXY_CACHE_MAXSIZE names no setting; did you mean GAR_PROXY_CACHE_MAX_SIZE?"
    )
    with pytest.raises(ConfigError, match=r"GAR_PROXY_NOTHING_LIKE_IT names no setting$"):
        load_settings(env={"GAR_PROXY_NOTHING_LIKE_IT": "1"})


def test_every_setting_has_one_gar_proxy_name_derived_from_its_key(tmp_path: Path) -> None:
    from proxy.config import SPECS, describe

    samples = {"server.listen": "127.0.0.1:7000", "routing.location": "europe-west1"}
    for spec in SPECS.values():
        assert spec.env[0] == "GAR_PROXY_" + spec.key.upper().replace(".", "_")
        raw = samples.get(spec.key)
        if raw is None:
            continue
        settings = load_settings(env={"HOME": str(tmp_path), spec.env[0]: raw})
        assert dict(describe(settings))[spec.key] == raw
    legacy = load_settings(env={"HOME": str(tmp_path), "GAR_PROJECT_ID": "p2"})
    assert legacy.gcp.project_id == "p2"


def test_example_config_parses() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    load_settings(example, env={})


async def test_project_id_completes_two_part_names_only(tmp_path: Path) -> None:
    from proxy.cache.index import CacheIndex
    from proxy.oci.names import Repository
    from proxy.services.locations import LocationResolver

    settings = load_settings(
        env={"HOME": str(tmp_path), "GAR_PROJECT_ID": "team-proj"},
        overrides={"routing.resolve_locations": "false"},
    )
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    try:
        resolver = LocationResolver(
            settings.routing, None, index, gar=True, default_project=settings.gcp.project_id
        )
        two = await resolver.resolve(Repository.parse("my-repo/app"))
        assert (two.path, two.location) == ("team-proj/my-repo/app", "us")
        three = await resolver.resolve(Repository.parse("other/my-repo/app"))
        assert three.path == "other/my-repo/app"
    finally:
        await index.close()
