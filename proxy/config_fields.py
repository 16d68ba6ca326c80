"""Every setting, declared once: its TOML key, ``Settings`` attribute, parser and
environment variables. ``proxy.config`` loads them in this order of precedence
(TOML < environment < flags); ``config check`` and the docs list them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.config_values import (
    choice,
    parse_bool,
    parse_duration,
    parse_hosts,
    parse_int,
    parse_listen,
    parse_location,
    parse_optional_path,
    parse_optional_str,
    parse_path,
    parse_positive_int,
    parse_routes,
    parse_size,
    parse_str,
)


@dataclass(frozen=True)
class Field:
    key: str  # TOML "section.name"
    attr: str  # Settings attribute (listen fills two)
    parse: Callable[[Any], Any]
    env: tuple[str, ...] = ()
    secret: bool = False


FIELDS: tuple[Field, ...] = (
    Field("server.listen", "listen", parse_listen, ("GAR_PROXY_LISTEN",)),
    Field(
        "server.log_level",
        "log_level",
        choice("debug", "info", "warning", "error"),
        ("GAR_PROXY_LOG_LEVEL",),
    ),
    Field("server.log_format", "log_format", choice("text", "json"), ("GAR_PROXY_LOG_FORMAT",)),
    Field("server.allow_delete", "allow_delete", parse_bool, ("GAR_PROXY_ALLOW_DELETE",)),
    Field(
        "server.push_concurrency",
        "push_concurrency",
        parse_positive_int,
        ("GAR_PROXY_PUSH_CONCURRENCY",),
    ),
    Field("upstream.url", "upstream_url", parse_str, ("GAR_PROXY_UPSTREAM_URL",)),
    Field("upstream.auth", "auth", choice("gcp", "basic", "none"), ("GAR_PROXY_AUTH",)),
    Field("upstream.username", "username", parse_optional_str, ("GAR_PROXY_USERNAME",)),
    Field(
        "upstream.password", "password", parse_optional_str, ("GAR_PROXY_PASSWORD",), secret=True
    ),
    Field("upstream.location", "location", parse_location, ("GAR_LOCATION",)),
    Field("upstream.routes", "routes", parse_routes, ("GAR_PROXY_ROUTES",)),
    Field(
        "upstream.resolve_locations",
        "resolve_locations",
        parse_bool,
        ("GAR_PROXY_RESOLVE_LOCATIONS",),
    ),
    Field(
        "upstream.metadata_api_url", "metadata_api_url", parse_str, ("GAR_PROXY_METADATA_API_URL",)
    ),
    Field(
        "upstream.trusted_realm_hosts",
        "trusted_realm_hosts",
        parse_hosts,
        ("GAR_PROXY_TRUSTED_REALM_HOSTS",),
    ),
    Field("upstream.timeout", "timeout_seconds", parse_duration, ("GAR_TIMEOUT_SECONDS",)),
    Field(
        "upstream.connect_timeout",
        "connect_timeout_seconds",
        parse_duration,
        ("GAR_PROXY_CONNECT_TIMEOUT",),
    ),
    Field(
        "upstream.max_connections", "max_connections", parse_positive_int, ("GAR_PROXY_POOL_SIZE",)
    ),
    Field("upstream.max_keepalive", "max_keepalive", parse_int, ("GAR_PROXY_POOL_KEEPALIVE",)),
    Field("upstream.http2", "http2", parse_bool, ("GAR_PROXY_HTTP2",)),
    Field("upstream.retries", "retries", parse_int, ("GAR_PROXY_RETRIES",)),
    Field(
        "upstream.backoff_base", "backoff_base_seconds", parse_duration, ("GAR_PROXY_BACKOFF_BASE",)
    ),
    Field(
        "upstream.backoff_max", "backoff_max_seconds", parse_duration, ("GAR_PROXY_BACKOFF_MAX",)
    ),
    Field(
        "upstream.read_rate_per_minute", "read_rate_per_minute", parse_int, ("GAR_PROXY_READ_RATE",)
    ),
    Field(
        "upstream.write_rate_per_minute",
        "write_rate_per_minute",
        parse_int,
        ("GAR_PROXY_WRITE_RATE",),
    ),
    Field(
        "gcp.project_id",
        "project_id",
        parse_optional_str,
        ("GAR_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"),
    ),
    Field(
        "gcp.credentials_file",
        "credentials_file",
        parse_optional_path,
        ("GOOGLE_APPLICATION_CREDENTIALS",),
    ),
    Field(
        "gcp.service_account_key",
        "service_account_key",
        parse_optional_str,
        ("GAR_SERVICE_ACCOUNT_KEY",),
        secret=True,
    ),
    Field("gcp.adc_file", "adc_file", parse_optional_path, ("GAR_PROXY_ADC_FILE",)),
    Field(
        "gcp.metadata_timeout",
        "metadata_timeout_seconds",
        parse_duration,
        ("GAR_PROXY_METADATA_TIMEOUT",),
    ),
    Field("gcp.metadata_host", "metadata_host", parse_str, ("GCE_METADATA_HOST",)),
    Field("gcp.read_only", "read_only", parse_bool, ("GAR_PROXY_READ_ONLY",)),
    Field("cache.dir", "cache_dir", parse_path, ("GAR_PROXY_CACHE_DIR",)),
    Field("cache.max_size", "max_size", parse_size, ("GAR_PROXY_CACHE_MAX_SIZE",)),
    Field("cache.tag_ttl", "tag_ttl_seconds", parse_duration, ("GAR_PROXY_TAG_TTL",)),
    Field("cache.max_stale", "max_stale_seconds", parse_duration, ("GAR_PROXY_MAX_STALE",)),
    Field(
        "cache.stale_recheck",
        "stale_recheck_seconds",
        parse_duration,
        ("GAR_PROXY_STALE_RECHECK",),
    ),
    Field(
        "cache.manifest_max_size",
        "manifest_max_bytes",
        parse_size,
        ("GAR_PROXY_MANIFEST_MAX_SIZE",),
    ),
    Field(
        "cache.fill_timeout", "fill_timeout_seconds", parse_duration, ("GAR_PROXY_FILL_TIMEOUT",)
    ),
    Field("cache.offline", "offline", parse_bool, ("GAR_PROXY_OFFLINE",)),
)
