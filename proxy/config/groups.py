"""Every setting, declared once: one frozen dataclass per TOML section, one field per key.

A component receives its own section(s), never the whole ``Settings``. The loader,
``config check``, ``config example`` and the docs read these declarations. The
sections are declared in ``proxy.config.sections`` (``listener``, ``upstream``,
``cache``, ``gate``); here they are put in order and made one ``Settings``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from proxy.config.fields import Spec, specs_of
from proxy.config.sections.cache import CacheSettings
from proxy.config.sections.gate import VulnerabilityGateSettings
from proxy.config.sections.listener import AccessSettings, ServerSettings, TlsSettings
from proxy.config.sections.upstream import (
    ApiSettings,
    GcpSettings,
    QuotaSettings,
    RoutingSettings,
    TransportSettings,
    UpstreamSettings,
)

__all__ = [
    "GROUPS",
    "SPECS",
    "AccessSettings",
    "ApiSettings",
    "CacheSettings",
    "GcpSettings",
    "QuotaSettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "TlsSettings",
    "TransportSettings",
    "UpstreamSettings",
    "VulnerabilityGateSettings",
    "value_of",
]

# The sections in the order config.example.toml shows them.
GROUPS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "gcp": GcpSettings,
    "routing": RoutingSettings,
    "transport": TransportSettings,
    "quotas": QuotaSettings,
    "apis": ApiSettings,
    "cache": CacheSettings,
    "access": AccessSettings,
    "tls": TlsSettings,
    "vulnerability_gate": VulnerabilityGateSettings,
}


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    upstream: UpstreamSettings = dataclasses.field(default_factory=UpstreamSettings)
    gcp: GcpSettings = dataclasses.field(default_factory=GcpSettings)
    routing: RoutingSettings = dataclasses.field(default_factory=RoutingSettings)
    transport: TransportSettings = dataclasses.field(default_factory=TransportSettings)
    quotas: QuotaSettings = dataclasses.field(default_factory=QuotaSettings)
    apis: ApiSettings = dataclasses.field(default_factory=ApiSettings)
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)
    access: AccessSettings = dataclasses.field(default_factory=AccessSettings)
    tls: TlsSettings = dataclasses.field(default_factory=TlsSettings)
    vulnerability_gate: VulnerabilityGateSettings = dataclasses.field(
        default_factory=VulnerabilityGateSettings
    )


SPECS: dict[str, Spec] = {
    spec.key: spec for group, kind in GROUPS.items() for spec in specs_of(group, kind)
}


def value_of(settings: Settings, spec: Spec) -> Any:
    return getattr(getattr(settings, spec.group), spec.name)
