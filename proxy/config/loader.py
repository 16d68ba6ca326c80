"""Settings built once: defaults < TOML file < environment < command line, then checked.

This is the only module that reads ``os.environ``. A ``GAR_PROXY_*`` variable that
names no setting, an old spelling (``proxy.config.renamed``) and a bad value all stop
start-up with one line naming the key.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config.checks import check
from proxy.config.fields import CONFIG_ENV, ENV_PREFIX, ConfigError, Spec
from proxy.config.groups import GROUPS, SPECS, Settings, value_of
from proxy.config.renamed import TOP_LEVEL_LISTS, env_error, key_error
from proxy.config.values import Route, overrides_table
from proxy.redact import redact, remember_secret

_ENV_NAMES = {name for spec in SPECS.values() for name in spec.env} | {CONFIG_ENV}


def _default_paths(env: Mapping[str, str]) -> dict[str, Any]:
    home = Path(env.get("HOME", "~"))
    cache_base = env.get("XDG_CACHE_HOME") or str(home / ".cache")
    gcloud = env.get("CLOUDSDK_CONFIG") or str(home / ".config/gcloud")
    return {
        "cache.dir": Path(cache_base).expanduser() / "gar-proxy",
        "gcp.adc_file": Path(gcloud).expanduser() / "application_default_credentials.json",
    }


def _parse(spec: Spec, raw: Any, source: str) -> Any:
    try:
        return spec.parse(raw)
    except ValueError as error:
        raise ConfigError(f"{spec.key} ({source}): {error}") from None


def read_file(path: Path) -> dict[str, Any]:
    """The file's settings keyed ``section.key``, as written (not yet parsed)."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {path}: {error}") from None
    return flatten(document, str(path))


def flatten(document: Mapping[str, Any], path: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if section in TOP_LEVEL_LISTS and isinstance(table, list):
            flat[TOP_LEVEL_LISTS[section]] = table  # [[mirrors]] reads better nested less
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{section} ({path}): expected a [{section}] table")
        for name, value in table.items():
            key = f"{section}.{name}"
            moved = key_error(key, path)
            if moved is not None:
                raise ConfigError(moved)
            if key not in SPECS:
                hint = difflib.get_close_matches(key, SPECS, n=1)
                maybe = f"; did you mean {hint[0]}?" if hint else ""
                raise ConfigError(f"{key} ({path}): unknown setting{maybe}")
            flat[key] = value
    return flat


def _check_env_names(env: Mapping[str, str]) -> None:
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in _ENV_NAMES:
            continue
        renamed = env_error(name)
        if renamed is not None:
            raise ConfigError(renamed)
        # Compared past the common prefix, which would make every pair look alike.
        known = {n.removeprefix(ENV_PREFIX): n for n in sorted(_ENV_NAMES)}
        hint = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), known, n=1, cutoff=0.7)
        maybe = f"; did you mean {known[hint[0]]}?" if hint else ""
        raise ConfigError(f"{name} names no setting{maybe}")


def env_source(spec: Spec, env: Mapping[str, str]) -> str | None:
    """The environment name ``spec`` is taken from: its own first, then the others."""
    return next((name for name in spec.env if env.get(name, "") != ""), None)


def config_path(config_file: Path | None, env: Mapping[str, str]) -> Path | None:
    if config_file is None and env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return config_file


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """TOML file < environment < ``overrides`` (CLI flags, keyed like ``cache.dir``)."""
    env = dict(os.environ if env is None else env)
    _check_env_names(env)
    values: dict[str, Any] = _default_paths(env)
    path = config_path(config_file, env)
    if path is not None:
        values.update({k: _parse(SPECS[k], raw, str(path)) for k, raw in read_file(path).items()})
    values.update(_from_env(env))
    values.update(_from_flags(overrides or {}))
    settings = _build(values)
    check(settings)
    _remember_secrets(settings)
    return settings


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found = {}
    for spec in SPECS.values():
        name = env_source(spec, env)
        if name is not None:
            found[spec.key] = _parse(spec, env[name], name)
    return found


def _from_flags(overrides: Mapping[str, Any]) -> dict[str, Any]:
    found = {}
    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in SPECS:
            raise ConfigError(key_error(key, "command line") or f"{key}: unknown setting")
        found[key] = _parse(SPECS[key], raw, "command line")
    return found


def _remember_secrets(settings: Settings) -> None:
    """Every secret value the settings hold is redacted from every text this process
    writes (``proxy.redact``): the secret settings, a password in ``upstream.url``, a
    service-account key's private key. Secret files register as they are read."""
    for spec in SPECS.values():
        if spec.secret:
            remember_secret(value_of(settings, spec))
    remember_secret(urlsplit(settings.upstream.url).password)
    key = settings.gcp.service_account_key
    if key:
        # Not JSON: the credentials loader says so; the whole value is listed above.
        with contextlib.suppress(ValueError, AttributeError):
            remember_secret(str(json.loads(key).get("private_key", "")))


def _build(values: Mapping[str, Any]) -> Settings:
    groups: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        spec = SPECS[key]
        groups.setdefault(spec.group, {})[spec.name] = value
    return Settings(**{name: GROUPS[name](**fields) for name, fields in groups.items()})


def describe(settings: Settings) -> list[tuple[str, str]]:
    """Effective settings as (key, value) rows, secrets redacted, for ``config check``."""
    rows = []
    for spec in SPECS.values():
        value = value_of(settings, spec)
        if spec.secret and value:
            value = "<redacted>"
        elif spec.key == "server.listen":
            value = f"{value[0]}:{value[1]}"
        elif spec.key == "vulnerability_gate.repositories":
            value = json.dumps(overrides_table(value)) if value else "-"
        elif isinstance(value, tuple):
            shown = [f"{v.prefix}={v.location}" if isinstance(v, Route) else str(v) for v in value]
            value = ", ".join(shown) or "-"
        rows.append((spec.key, "-" if value is None else redact(str(value))))
    return rows
