"""One environment name per setting (plus the original design's and Google's), and
every spelling that is no longer read stops start-up naming the one that replaced it:
nobody's setting is silently ignored after the sections were split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import SPECS, ConfigError, load_settings
from proxy.config.fields import env_name
from proxy.config.renamed import MOVED, OLD_ENV, RENAMED_ENV, TOP_LEVEL_LISTS, spelling
from proxy.config.values import Choice

# The names a setting keeps beside GAR_PROXY_<SECTION>_<KEY>: the original design's
# (seed/gar-refinement.md §9.1) and Google's own, as google-auth reads them.
COMPATIBLE = {
    "gcp.project_id": ("GAR_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"),
    "gcp.credentials_file": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "gcp.service_account_key": ("GAR_SERVICE_ACCOUNT_KEY",),
    "gcp.metadata_host": ("GCE_METADATA_HOST",),
    "routing.location": ("GAR_LOCATION",),
    "transport.timeout": ("GAR_TIMEOUT_SECONDS",),
}
# A value each old name's setting parses, to show the error is the name's, not the value's.
SAMPLE = {
    "server.listen": "127.0.0.1:7000",
    "routing.location": "europe-west1",
    "routing.routes": "my-proj/eu=europe-west1",
    "routing.mirrors": "docker.io=my-proj/hub@us",
}


def sample(key: str) -> str:
    parse = SPECS[key].parse
    return SAMPLE.get(key) or (parse.options[-1] if isinstance(parse, Choice) else "1")


def test_each_setting_has_its_own_name_and_only_the_documented_others() -> None:
    for spec in SPECS.values():
        # The rule written out here, not env_name's own output compared with itself.
        assert spec.env[0] == "GAR_PROXY_" + spec.key.replace(".", "_").upper(), spec.key
        assert spec.env[1:] == COMPATIBLE.get(spec.key, ()), spec.key
    assert set(COMPATIBLE) <= set(SPECS)


def test_the_old_names_are_no_setting_s_name_and_each_points_at_a_setting() -> None:
    current = {name for spec in SPECS.values() for name in spec.env}
    assert not current & set(OLD_ENV)
    assert set(OLD_ENV.values()) <= set(SPECS)
    assert set(MOVED.values()) <= set(SPECS)
    assert not set(MOVED) & set(SPECS)
    assert len(RENAMED_ENV) == 30  # the home-grown second names issue 21 counted


@pytest.mark.parametrize("old", sorted(OLD_ENV))
def test_an_old_environment_name_stops_start_up_naming_the_new_one(
    tmp_path: Path, old: str
) -> None:
    key = OLD_ENV[old]
    raw = sample(key)
    with pytest.raises(ConfigError) as raised:
        load_settings(env={"HOME": str(tmp_path), old: raw})
    assert str(raised.value) == f"{old} was renamed: set {env_name(key)} ({key})"
    # ... and the new name takes the same value.
    load_settings(env={"HOME": str(tmp_path), env_name(key): raw})


def _toml(key: str) -> str:
    section, _, name = key.partition(".")
    if name in ("routes", "mirrors"):
        return f'[[{section}.{name}]]\nprefix = "p"\nlocation = "us"\n'
    return f"[{section}]\n{name} = 1\n"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_file_key_stops_start_up_naming_the_new_one(tmp_path: Path, old: str) -> None:
    config = tmp_path / "gar-proxy.toml"
    config.write_text(_toml(old))
    with pytest.raises(ConfigError) as raised:
        load_settings(config, env={"HOME": str(tmp_path)})
    new = MOVED[old]
    assert str(raised.value) == f"{old} ({config}): moved to {new} ({spelling(new)})"


def test_the_new_spelling_is_how_a_file_writes_it() -> None:
    assert spelling("transport.timeout") == "timeout under [transport]"
    assert spelling("routing.routes") == "[[routing.routes]]"
    assert {spelling(key) for key in TOP_LEVEL_LISTS.values()} == {
        "[[mirrors]]", "[[warm]]", "[[tag_policies]]"
    }  # fmt: skip


def test_a_mirror_written_under_upstream_is_told_to_use_the_top_level_tables(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gar-proxy.toml"
    config.write_text('[[upstream.mirrors]]\nhost = "docker.io"\nrepository = "p/hub"\n')
    with pytest.raises(ConfigError, match=r"moved to routing\.mirrors \(\[\[mirrors\]\]\)$"):
        load_settings(config, env={"HOME": str(tmp_path)})


def test_the_command_line_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--offline", "config", "check"],
        env={"HOME": str(tmp_path), "GAR_PROXY_POOL_SIZE": "10", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gar-proxy: config: GAR_PROXY_POOL_SIZE was renamed: set "
        "GAR_PROXY_TRANSPORT_MAX_CONNECTIONS (transport.max_connections)"
    ]


@pytest.mark.parametrize(("key", "names"), sorted(COMPATIBLE.items()))
def test_the_compatible_names_are_read(tmp_path: Path, key: str, names: tuple[str, ...]) -> None:
    raw = {"routing.location": "asia", "transport.timeout": "12"}.get(key, "x")
    for name in names:
        settings = load_settings(env={"HOME": str(tmp_path), name: raw})
        value = getattr(getattr(settings, key.split(".")[0]), key.split(".")[1])
        assert str(value).removesuffix(".0") == raw, name
