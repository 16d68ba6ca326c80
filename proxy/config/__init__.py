"""Settings: declared once, built once from TOML, then environment, then CLI flags;
frozen; each component is passed its own section(s).

- ``sections``: every setting, one frozen dataclass per TOML section, each field with
  its parser and doc: ``listener`` (``server``, ``access``, ``tls``), ``upstream``
  (``upstream``, ``gcp``, ``routing``, ``transport``, ``quotas``, ``apis``), ``cache``,
  ``gate`` (``vulnerability_gate``); ``groups``: the sections in order, ``Settings``,
  ``SPECS``;
- ``fields``: how a setting is declared (``setting``) and read back (``Spec``);
- ``values``: the parsers and the value types (``Route``, ``Mirror``, ...);
  ``tag_policies``: the ``[[tag_policies]]`` rules;
- ``loader``: ``load_settings`` (the only reader of ``os.environ``), ``describe``;
  ``checks``: what must hold across settings;
- ``renamed``: spellings no longer read, each refused with the new one;
- ``sources``: where each effective setting came from (``config check``);
- ``example``: ``config.example.toml`` from the declarations (``config example``).

Every key has one environment name, ``GAR_PROXY_<SECTION>_<KEY>``
(``cache.max_size`` is ``GAR_PROXY_CACHE_MAX_SIZE``); a few keep the original
design's or Google's (``GAR_LOCATION``, ``GAR_TIMEOUT_SECONDS``, ``GAR_PROJECT_ID``,
``GOOGLE_APPLICATION_CREDENTIALS``, ...). A bad value, a ``GAR_PROXY_*`` variable
that names no setting, or an old spelling stops start-up with one line::

    gar-proxy: config: cache.max_size (GAR_PROXY_CACHE_MAX_SIZE): expected a size like
    '50GiB', got 'lots'
    gar-proxy: config: GAR_PROXY_TAG_TTL was renamed: set GAR_PROXY_CACHE_TAG_TTL
    (cache.tag_ttl)
"""

from __future__ import annotations

from proxy.config.checks import is_loopback
from proxy.config.fields import CONFIG_ENV, ConfigError, Spec
from proxy.config.groups import (
    SPECS,
    AccessSettings,
    ApiSettings,
    CacheSettings,
    GcpSettings,
    QuotaSettings,
    RoutingSettings,
    ServerSettings,
    Settings,
    TlsSettings,
    TransportSettings,
    UpstreamSettings,
    VulnerabilityGateSettings,
    value_of,
)
from proxy.config.loader import describe, load_settings

__all__ = [
    "CONFIG_ENV",
    "SPECS",
    "AccessSettings",
    "ApiSettings",
    "CacheSettings",
    "ConfigError",
    "GcpSettings",
    "QuotaSettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "Spec",
    "TlsSettings",
    "TransportSettings",
    "UpstreamSettings",
    "VulnerabilityGateSettings",
    "describe",
    "is_loopback",
    "load_settings",
    "value_of",
]
