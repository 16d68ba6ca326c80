"""Settings: built once from TOML, then environment, then CLI flags; frozen; passed in.

This is the only module that reads ``os.environ``. Every key is declared once in
``proxy.config_fields.FIELDS`` with its TOML path, environment variable and parser,
so ``config check``, the docs and the loader cannot drift apart. A bad value stops
start-up with one line::

    gar-proxy: config: cache.max_size (GAR_PROXY_CACHE_MAX_SIZE): expected a size like
    '50GiB', got 'lots'
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config_fields import FIELDS, Field
from proxy.config_values import Route


class ConfigError(Exception):
    """A setting could not be read; the message is one line naming the key."""


@dataclass(frozen=True)
class Settings:
    # [server]
    host: str = "127.0.0.1"
    port: int = 5000
    log_level: str = "info"
    log_format: str = "text"
    allow_delete: bool = False
    push_concurrency: int = 5
    # [upstream]
    upstream_url: str = "https://{location}-docker.pkg.dev"
    auth: str = "gcp"
    username: str | None = None
    password: str | None = None
    location: str = "us"
    routes: tuple[Route, ...] = ()
    resolve_locations: bool = True
    metadata_api_url: str = "https://artifactregistry.googleapis.com"
    trusted_realm_hosts: tuple[str, ...] = ()
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    max_connections: int = 100
    max_keepalive: int = 20
    http2: bool = False
    retries: int = 4
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    read_rate_per_minute: int = 60_000
    write_rate_per_minute: int = 18_000
    # [gcp]
    project_id: str | None = None
    credentials_file: Path | None = None
    service_account_key: str | None = field(default=None, repr=False)
    adc_file: Path | None = None
    metadata_timeout_seconds: float = 2.0
    metadata_host: str = "metadata.google.internal"
    read_only: bool = False
    # [cache]
    cache_dir: Path = Path("~/.cache/gar-proxy")
    max_size: int = 50 * 1024**3
    tag_ttl_seconds: float = 60.0
    max_stale_seconds: float = 7 * 24 * 3600.0
    stale_recheck_seconds: float = 10.0
    manifest_max_bytes: int = 64 * 1024**2
    fill_timeout_seconds: float = 3600.0
    offline: bool = False

    @property
    def is_gar(self) -> bool:
        """Talking to Artifact Registry (location-templated URL) rather than any registry."""
        return "{location}" in self.upstream_url

    def upstream_base(self, location: str) -> str:
        return self.upstream_url.replace("{location}", location).rstrip("/")


# --- the table of keys -----------------------------------------------------------------------


_BY_KEY = {f.key: f for f in FIELDS}


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")) / ".cache")
    return Path(base).expanduser() / "gar-proxy"


def _default_adc_file(env: Mapping[str, str]) -> Path:
    config_dir = env.get("CLOUDSDK_CONFIG") or str(Path(env.get("HOME", "~")) / ".config/gcloud")
    return Path(config_dir).expanduser() / "application_default_credentials.json"


def _apply(values: dict[str, Any], spec: Field, raw: Any, source: str) -> None:
    try:
        parsed = spec.parse(raw)
    except ValueError as error:
        raise ConfigError(f"{spec.key} ({source}): {error}") from None
    if spec.attr == "listen":
        values["host"], values["port"] = parsed
    else:
        values[spec.attr] = parsed


def _flatten(document: Mapping[str, Any], path: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section} ({path}): expected a [{section}] table")
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in _BY_KEY:
                raise ConfigError(f"{key} ({path}): unknown setting")
            flat[key] = value
    return flat


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """TOML file < environment < ``overrides`` (CLI flags, keyed like ``cache.dir``)."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {
        "cache_dir": _default_cache_dir(env),
        "adc_file": _default_adc_file(env),
    }
    config_file = config_file or (
        Path(env["GAR_PROXY_CONFIG"]) if env.get("GAR_PROXY_CONFIG") else None
    )
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"config file {config_file}: {error}") from None
        for key, raw in _flatten(document, str(config_file)).items():
            _apply(values, _BY_KEY[key], raw, str(config_file))
    for spec in FIELDS:
        for name in spec.env:
            if env.get(name, "") != "":
                _apply(values, spec, env[name], name)
                break
    for key, raw in (overrides or {}).items():
        if raw is not None:
            if key not in _BY_KEY:
                raise ConfigError(f"{key}: unknown setting")
            _apply(values, _BY_KEY[key], raw, "command line")
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    if settings.auth == "basic" and not (settings.username and settings.password):
        raise ConfigError("upstream.auth (basic): needs upstream.username and upstream.password")
    if not settings.upstream_url.startswith(("http://", "https://")):
        raise ConfigError(f"upstream.url: expected an http(s) URL, got {settings.upstream_url!r}")


def describe(settings: Settings) -> list[tuple[str, str]]:
    """Effective settings as (key, value) rows, secrets redacted, for ``config check``."""
    rows = []
    for spec in FIELDS:
        if spec.attr == "listen":
            value: Any = f"{settings.host}:{settings.port}"
        else:
            value = getattr(settings, spec.attr)
        if spec.secret and value:
            value = "<redacted>"
        elif isinstance(value, tuple):
            value = (
                ", ".join(
                    f"{v.prefix}={v.location}" if isinstance(v, Route) else str(v) for v in value
                )
                or "-"
            )
        rows.append((spec.key, "-" if value is None else str(value)))
    return rows
