"""Spellings that are no longer read, and the setting each one became.

The ``[upstream]`` section once held 32 keys of six concerns; its routing, transport,
quota and API keys moved to sections of their own (``MOVED``), and every setting lost
the second environment names it had grown (``RENAMED_ENV``). A setting keeps one
environment name, ``GAR_PROXY_<SECTION>_<KEY>``, plus the original design's and
Google's own (declared beside it in ``proxy.config.sections``). An old spelling stops
start-up with one line naming the new one, so nobody's setting is silently ignored::

    >>> print(env_error("GAR_PROXY_POOL_SIZE"))  # doctest: +NORMALIZE_WHITESPACE
    GAR_PROXY_POOL_SIZE was renamed: set GAR_PROXY_TRANSPORT_MAX_CONNECTIONS
    (transport.max_connections)
    >>> print(key_error("upstream.timeout", "gar-proxy.toml"))  # doctest: +NORMALIZE_WHITESPACE
    upstream.timeout (gar-proxy.toml): moved to transport.timeout
    (timeout under [transport])
"""

from __future__ import annotations

from proxy.config.fields import env_name

# TOML key -> its section now. The key's GAR_PROXY_UPSTREAM_* name moved with it.
MOVED = {
    "upstream.location": "routing.location",
    "upstream.routes": "routing.routes",
    "upstream.resolve_locations": "routing.resolve_locations",
    "upstream.check_repositories": "routing.check_repositories",
    "upstream.mirrors": "routing.mirrors",
    "upstream.project_domains": "routing.project_domains",
    "upstream.timeout": "transport.timeout",
    "upstream.connect_timeout": "transport.connect_timeout",
    "upstream.max_connections": "transport.max_connections",
    "upstream.max_keepalive": "transport.max_keepalive",
    "upstream.keepalive_expiry": "transport.keepalive_expiry",
    "upstream.http2": "transport.http2",
    "upstream.lean_bodies": "transport.lean_bodies",
    "upstream.retries": "transport.retries",
    "upstream.backoff_base": "transport.backoff_base",
    "upstream.backoff_max": "transport.backoff_max",
    "upstream.read_rate_per_minute": "quotas.reads_per_minute",
    "upstream.write_rate_per_minute": "quotas.writes_per_minute",
    "upstream.metadata_api_url": "apis.artifact_registry",
    "upstream.analysis_api_url": "apis.container_analysis",
    "upstream.storage_api_url": "apis.cloud_storage",
}

# The second environment names settings once had -> the setting.
RENAMED_ENV = {
    "GAR_PROXY_LISTEN": "server.listen",
    "GAR_PROXY_LOG_LEVEL": "server.log_level",
    "GAR_PROXY_LOG_FORMAT": "server.log_format",
    "GAR_PROXY_ALLOW_DELETE": "server.allow_delete",
    "GAR_PROXY_PUSH_CONCURRENCY": "server.push_concurrency",
    "GAR_PROXY_AUTH": "upstream.auth",
    "GAR_PROXY_USERNAME": "upstream.username",
    "GAR_PROXY_PASSWORD": "upstream.password",
    "GAR_PROXY_TRUSTED_REALM_HOSTS": "upstream.trusted_realm_hosts",
    "GAR_PROXY_ROUTES": "routing.routes",
    "GAR_PROXY_RESOLVE_LOCATIONS": "routing.resolve_locations",
    "GAR_PROXY_CONNECT_TIMEOUT": "transport.connect_timeout",
    "GAR_PROXY_POOL_SIZE": "transport.max_connections",
    "GAR_PROXY_POOL_KEEPALIVE": "transport.max_keepalive",
    "GAR_PROXY_HTTP2": "transport.http2",
    "GAR_PROXY_RETRIES": "transport.retries",
    "GAR_PROXY_BACKOFF_BASE": "transport.backoff_base",
    "GAR_PROXY_BACKOFF_MAX": "transport.backoff_max",
    "GAR_PROXY_READ_RATE": "quotas.reads_per_minute",
    "GAR_PROXY_WRITE_RATE": "quotas.writes_per_minute",
    "GAR_PROXY_METADATA_API_URL": "apis.artifact_registry",
    "GAR_PROXY_ADC_FILE": "gcp.adc_file",
    "GAR_PROXY_METADATA_TIMEOUT": "gcp.metadata_timeout",
    "GAR_PROXY_READ_ONLY": "gcp.read_only",
    "GAR_PROXY_TAG_TTL": "cache.tag_ttl",
    "GAR_PROXY_MAX_STALE": "cache.max_stale",
    "GAR_PROXY_STALE_RECHECK": "cache.stale_recheck",
    "GAR_PROXY_MANIFEST_MAX_SIZE": "cache.manifest_max_size",
    "GAR_PROXY_FILL_TIMEOUT": "cache.fill_timeout",
    "GAR_PROXY_OFFLINE": "cache.offline",
}

# Every environment name no longer read -> the setting it meant.
OLD_ENV = {**RENAMED_ENV, **{env_name(old): new for old, new in MOVED.items()}}
# Arrays of tables written at the top of a file, and the setting each one is.
TOP_LEVEL_LISTS = {
    "mirrors": "routing.mirrors",
    "warm": "cache.warm",
    "tag_policies": "cache.tag_policies",
}


def spelling(key: str) -> str:
    """How a file writes ``key``: ``timeout under [transport]``, ``[[mirrors]]``."""
    top = next((name for name, to in TOP_LEVEL_LISTS.items() if to == key), None)
    if top is not None:
        return f"[[{top}]]"
    if key == "routing.routes":
        return "[[routing.routes]]"
    if key == "vulnerability_gate.repositories":
        return '[vulnerability_gate.repositories."PREFIX"]'
    section, _, name = key.partition(".")
    return f"{name} under [{section}]"


def env_error(name: str) -> str | None:
    """The one line for an environment name no longer read; None for any other."""
    key = OLD_ENV.get(name)
    if key is None:
        return None
    return f"{name} was renamed: set {env_name(key)} ({key})"


def key_error(key: str, source: str) -> str | None:
    """The one line for a file key that moved; None for any other."""
    new = MOVED.get(key)
    if new is None:
        return None
    return f"{key} ({source}): moved to {new} ({spelling(new)})"
