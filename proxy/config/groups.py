"""Every setting, declared once: one frozen dataclass per TOML section, one field per key.

A component receives its own section(s), never the whole ``Settings``. The loader,
``config check``, ``config example`` and the docs read these declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config.fields import Spec, setting, specs_of
from proxy.config.tag_policies import TagRule, parse_tag_policies
from proxy.config.values import (
    GateOverrides,
    Mirror,
    Network,
    Route,
    SharedBucket,
    WarmSchedule,
    choice,
    overrides_table,
    parse_bool,
    parse_cves,
    parse_duration,
    parse_gate_overrides,
    parse_hosts,
    parse_int,
    parse_listen,
    parse_location,
    parse_mirrors,
    parse_networks,
    parse_optional_path,
    parse_optional_str,
    parse_path,
    parse_positive_int,
    parse_routes,
    parse_severity,
    parse_shared_bucket,
    parse_size,
    parse_str,
    parse_warm_schedule,
)


@dataclass(frozen=True)
class ServerSettings:
    """The proxy's own listener: its address, logs, and what clients may hold open."""

    listen: tuple[str, int] = setting(
        ("127.0.0.1", 5000), parse_listen, doc="HOST:PORT to serve on; port 0 picks a free one"
    )
    log_level: str = setting("info", choice("debug", "info", "warning", "error"), doc="log level")
    log_format: str = setting(
        "auto",
        choice("auto", "console", "text", "json"),
        doc="auto: console lines on a terminal, JSON otherwise (text is console)",
    )
    shutdown_grace: float = setting(
        30.0, parse_duration, doc="on SIGTERM, how long running pulls and fills may finish"
    )
    allow_delete: bool = setting(False, parse_bool, doc="forward manifest and tag DELETEs upstream")
    push_concurrency: int = setting(
        5, parse_positive_int, doc="blobs uploaded at a time by gar-proxy push"
    )
    # Unfinished requests end (proxy/http/limits.py). 0 turns a timeout off.
    header_timeout: float = setting(
        20.0, parse_duration, doc="a request's line and headers must arrive within this (0: off)"
    )
    idle_timeout: float = setting(
        15.0, parse_duration, doc="close a connection with no request for this long (0: off)"
    )
    body_timeout: float = setting(
        60.0, parse_duration, doc="close a request whose body sends nothing for this long (0: off)"
    )
    # A client sending one body byte per body_timeout held its connection (and upload
    # session) for ever. As Apache's mod_reqtimeout (body=20,MinRate=500, its default):
    # a body must arrive at body_min_rate on average, with body_rate_grace seconds of
    # credit; 500 B/s is slower than any link a push works over (a 1 GB layer would
    # take 23 days), yet a trickler must now spend 500 B/s per connection it holds.
    body_min_rate: int = setting(
        500,
        parse_size,
        doc="bytes per second a request body must average, after body_rate_grace of "
        "credit, or the connection is closed (0: off)",
    )
    body_rate_grace: float = setting(
        20.0, parse_duration, doc="seconds of credit a request body has against body_min_rate"
    )
    tls_handshake_timeout: float = setting(
        10.0, parse_duration, doc="a TLS handshake must finish within this (0: off)"
    )
    send_timeout: float = setting(
        60.0, parse_duration,
        doc="close a connection whose answer the client takes no byte of for this long (0: off)",
    )  # fmt: skip
    max_connections: int = setting(
        4096, parse_positive_int, doc="open client connections; more are answered 503"
    )
    max_connections_per_client: int = setting(
        512, parse_positive_int, doc="open connections from one client (an IPv6 /64 is one)"
    )
    # Upload sessions each hold a row, a spool file and an upstream session for 24 h.
    max_upload_sessions: int = setting(
        4096, parse_positive_int, doc="upload sessions open at once; more are answered 429"
    )
    max_upload_sessions_per_identity: int = setting(
        512, parse_positive_int, doc="upload sessions one identity has open at once"
    )
    # One identity's unfinished pushes could otherwise spool the cache disk down to
    # cache.min_free, and then nobody's push or fill finds room. 20 GiB: docker pushes
    # 5 layers at once, so five 4 GiB layers fit, and two identities at their cap leave
    # most of the default 50 GiB cache alone. A blob larger than the cap cannot be
    # pushed through the proxy (its spool holds it whole), so raise it for huge layers.
    max_upload_bytes_per_identity: int = setting(
        20 * 1024**3,
        parse_size,
        doc="bytes one identity's unfinished uploads may hold on disk; more are answered "
        "429 (a single larger blob 413); all clients are one identity without client "
        "auth; 0: no cap",
    )
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told: any local process could
    # then name itself anew to dodge the failed-login throttle (proxy/commands/serve.py).
    trusted_proxies: tuple[Network, ...] = setting(
        (),
        parse_networks,
        doc="front proxies (addresses or networks) whose X-Forwarded-For is believed; none "
        "by default",
    )

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]


@dataclass(frozen=True)
class UpstreamSettings:
    """The registry behind the proxy and who the proxy is to it. Google credentials for
    auth = "gcp" are under [gcp]. HTTPS_PROXY, HTTP_PROXY and NO_PROXY from the
    environment apply to upstream and token calls."""

    url: str = setting(
        "https://{location}-docker.pkg.dev",
        parse_str,
        doc="registry URL; {location} in it makes it Artifact Registry, any OCI registry works",
    )
    regional_url: str = setting(
        "https://docker.{location}.rep.pkg.dev",
        parse_str,
        doc="GAR's regional endpoint, for names a client gave as docker.LOCATION.rep.pkg.dev",
    )
    auth: str = setting(
        "gcp",
        choice("gcp", "basic", "bearer", "none"),
        doc="gcp: Google credentials ([gcp]); basic: username and password(_file); "
        "bearer: token_file; none: anonymous",
    )
    username: str | None = setting(None, parse_optional_str, doc="user for auth = basic")
    password: str | None = setting(
        None, parse_optional_str, secret=True, doc="password for auth = basic"
    )
    password_file: Path | None = setting(
        None, parse_optional_path, doc="file holding the basic password (instead of password)"
    )
    token_file: Path | None = setting(
        None, parse_optional_path, doc="file holding the token for auth = bearer"
    )
    tier: bool = setting(
        False, parse_bool, doc="upstream is another gar-proxy: ?ns= and hosts go to it in the name"
    )
    ca_file: Path | None = setting(
        None, parse_optional_path, doc="CA bundle (PEM) for upstream TLS, added to the system's"
    )
    trusted_realm_hosts: tuple[str, ...] = setting(
        (), parse_hosts, doc="token realms on other hosts that may be sent the credentials"
    )
    check_interval: float = setting(
        30.0, parse_duration,
        doc="how often a background GET /v2/ with the credentials checks the upstream "
        "(garproxy_upstream_up, /readyz); 0: never",
    )  # fmt: skip

    @property
    def is_gar(self) -> bool:
        """Talking to Artifact Registry (location-templated URL) rather than any registry."""
        return "{location}" in self.url

    def base(self, location: str, *, regional: bool = False) -> str:
        """The registry URL for ``location``; its regional endpoint when the client named
        that (docs/GAR.md N6) and the upstream is GAR."""
        template = self.regional_url if regional and self.is_gar else self.url
        return template.replace("{location}", location).rstrip("/")


@dataclass(frozen=True)
class GcpSettings:
    """Google credentials (upstream.auth = "gcp"), in this order: credentials_file,
    service_account_key, adc_file, then the GCE/GKE metadata server."""

    project_id: str | None = setting(
        None, parse_optional_str,
        env=("GAR_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"),
        doc="default project for REPO/IMAGE names that leave it out",
    )  # fmt: skip
    credentials_file: Path | None = setting(
        None, parse_optional_path, env=("GOOGLE_APPLICATION_CREDENTIALS",),
        doc="a service-account key (or external account) file",
    )  # fmt: skip
    service_account_key: str | None = setting(
        None, parse_optional_str, env=("GAR_SERVICE_ACCOUNT_KEY",), secret=True,
        doc="a service-account key's JSON, inline",
    )  # fmt: skip
    adc_file: Path | None = setting(
        None, parse_optional_path,
        doc="application default credentials (gcloud auth application-default login); "
        "default: application_default_credentials.json in $CLOUDSDK_CONFIG or ~/.config/gcloud",
    )  # fmt: skip
    metadata_timeout: float = setting(
        2.0, parse_duration, doc="how long to wait for the GCE/GKE metadata server to answer"
    )
    metadata_host: str = setting(
        "metadata.google.internal", parse_str, env=("GCE_METADATA_HOST",),
        doc="the metadata server",
    )  # fmt: skip
    read_only: bool = setting(
        False, parse_bool, doc="ask for cloud-platform.read-only tokens (pulls only)"
    )


@dataclass(frozen=True)
class RoutingSettings:
    """Which GAR repository and location an image name goes to."""

    location: str = setting(
        "us", parse_location, env=("GAR_LOCATION",),
        doc="location of a repository when nothing else says",
    )  # fmt: skip
    routes: tuple[Route, ...] = setting(
        (), parse_routes,
        doc="repositories under a prefix go to a fixed location "
        '(environment: "my-proj/eu=europe-west1,...")',
    )  # fmt: skip
    resolve_locations: bool = setting(
        True, parse_bool, doc="ask the Artifact Registry API where a repository lives"
    )
    check_repositories: bool = setting(
        True, parse_bool,
        doc="read repository formats and settings from the API: refuse non-Docker "
        "repositories before asking the registry",
    )  # fmt: skip
    mirrors: tuple[Mirror, ...] = setting(
        (), parse_mirrors,
        doc="another registry's images through a GAR remote repository "
        '(environment: "docker.io=my-proj/dockerhub-remote@us,..." or JSON)',
    )  # fmt: skip
    project_domains: tuple[str, ...] = setting(
        (), parse_hosts,
        doc="domains of domain-scoped projects (example.com for example.com:proj): bare "
        "names example.com/proj/REPO/IMAGE are then GAR's, not another registry's",
    )  # fmt: skip


@dataclass(frozen=True)
class TransportSettings:
    """How the proxy talks to the upstream: timeouts, connections, retries."""

    timeout: float = setting(
        30.0, parse_duration, env=("GAR_TIMEOUT_SECONDS",),
        doc="an upstream read or write may stall this long",
    )  # fmt: skip
    connect_timeout: float = setting(10.0, parse_duration, doc="to open a connection")
    max_connections: int = setting(
        100, parse_positive_int, doc="open upstream connections at once (blob bodies too)"
    )
    max_keepalive: int = setting(20, parse_int, doc="idle connections kept for reuse")
    keepalive_expiry: float = setting(
        90.0, parse_duration, doc="how long an idle connection is kept for reuse"
    )
    http2: bool = setting(False, parse_bool, doc="speak HTTP/2 to the upstream")
    lean_bodies: bool = setting(
        True, parse_bool,
        doc="blob bodies on their own HTTP/1.1 connections: downloads read straight into "
        "4 MiB batches, uploads sent straight from the client's pieces (false: through "
        "httpx like every other call)",
    )  # fmt: skip
    retries: int = setting(4, parse_int, doc="tries again on 429, 5xx and connection errors")
    backoff_base: float = setting(
        0.5, parse_duration, doc="first pause before a retry; doubles each time (full jitter)"
    )
    backoff_max: float = setting(30.0, parse_duration, doc="longest pause before a retry")


@dataclass(frozen=True)
class QuotaSettings:
    """Requests the proxy makes per GAR project and location, paced below GAR's quota."""

    reads_per_minute: int = setting(60_000, parse_int, doc="reads (GAR's quota per project)")
    writes_per_minute: int = setting(18_000, parse_int, doc="writes (GAR's quota per project)")


@dataclass(frozen=True)
class ApiSettings:
    """Google's REST APIs beside the registry (a test points them at fakes)."""

    artifact_registry: str = setting(
        "https://artifactregistry.googleapis.com",
        parse_str,
        doc="Artifact Registry API: repository locations, formats, cleanup",
    )
    container_analysis: str = setting(
        "https://containeranalysis.googleapis.com",
        parse_str,
        doc="Container Analysis API: vulnerabilities, SBOMs",
    )
    cloud_storage: str = setting(
        "https://storage.googleapis.com", parse_str, doc="Cloud Storage: SBOMs, cache.shared"
    )


@dataclass(frozen=True)
class CacheSettings:
    """What is cached, where, and for how long."""

    dir: Path = setting(
        Path("~/.cache/gar-proxy"), parse_path,
        doc="where blobs and the index live; default: $XDG_CACHE_HOME/gar-proxy",
    )  # fmt: skip
    max_size: int = setting(50 * 1024**3, parse_size, doc="evict least recently used above this")
    min_free: int = setting(
        1024**3, parse_size, doc="/readyz fails when the cache disk has less free space"
    )
    tag_ttl: float = setting(60.0, parse_duration, doc="a tag is answered locally this long")
    revalidate_window: float = setting(
        300.0, parse_duration,
        doc="past a tag's TTL, answer from the cache and revalidate in the background for "
        "this long; then a request waits for upstream (0: always wait)",
    )  # fmt: skip
    tag_policies: tuple[TagRule, ...] = setting(
        (), parse_tag_policies,
        doc="repository prefix and/or tag regex -> ttl or immutable; "
        "first match wins",
    )  # fmt: skip
    max_stale: float = setting(
        7 * 24 * 3600.0, parse_duration, doc="serve a stale tag this long while upstream is down"
    )
    stale_recheck: float = setting(
        10.0, parse_duration,
        doc="after a failed revalidation, serve that tag stale without asking again this long",
    )  # fmt: skip
    manifest_max_size: int = setting(64 * 1024**2, parse_size, doc="larger manifests are refused")
    fill_timeout: float = setting(3600.0, parse_duration, doc="one blob download may take this")
    offline: bool = setting(False, parse_bool, doc="never call upstream; serve the cache only")
    max_age: float = setting(
        0.0, parse_duration, doc="evict what was not read for this long (30d); 0: never"
    )
    negative_ttl: float = setting(
        30.0, parse_duration, doc="remember an upstream 404 this long; 0 turns it off"
    )
    warm: tuple[WarmSchedule, ...] = setting(
        (), parse_warm_schedule,
        doc="images whose matching tags, and images files name, are kept cached "
        "(environment: JSON)",
    )  # fmt: skip
    shared: SharedBucket | None = setting(
        None, parse_shared_bucket,
        doc="gs://BUCKET/PREFIX: a blob tier in Cloud Storage that replicas read before GAR "
        "and write after it",
    )  # fmt: skip


@dataclass(frozen=True)
class AccessSettings:
    """Who may use the proxy (README "Sharing it"). A non-loopback server.listen needs
    client auth here, or anonymous = true."""

    htpasswd_file: Path | None = setting(
        None, parse_optional_path, doc="client users, bcrypt only (htpasswd -B)"
    )
    tokens_file: Path | None = setting(None, parse_optional_path, doc="IDENTITY:TOKEN lines")
    rules_file: Path | None = setting(
        None, parse_optional_path, doc="TOML: pull/push prefixes and admin per identity"
    )
    anonymous: bool = setting(
        False, parse_bool, doc="serve clients without credentials on a non-loopback address"
    )
    metrics_public: bool = setting(True, parse_bool, doc="/metrics needs no credentials")
    reload_interval: float = setting(
        10.0, parse_duration, doc="how often to look for changed htpasswd/tokens/rules files"
    )
    credentials_ttl: float = setting(
        300.0, parse_duration, doc="a verified login is remembered this long (0: never)"
    )
    failed_login_burst: int = setting(
        10, parse_int, doc="failed logins one client address may make at once (0: no limit)"
    )
    failed_login_interval: float = setting(
        20.0, parse_duration, doc="then one more failed login per this long; others get 429"
    )

    @property
    def enabled(self) -> bool:
        return self.htpasswd_file is not None or self.tokens_file is not None


@dataclass(frozen=True)
class TlsSettings:
    """HTTPS on the proxy's own listener."""

    cert_file: Path | None = setting(None, parse_optional_path, doc="PEM chain; enables TLS")
    key_file: Path | None = setting(None, parse_optional_path, doc="PEM private key")
    reload_interval: float = setting(
        30.0, parse_duration, doc="how often to look for renewed cert/key files"
    )


@dataclass(frozen=True)
class VulnerabilityGateSettings:
    """Refuse images whose finished scan has findings at or above a severity
    (``proxy.gar.policy`` reads these; its messages name the keys)."""

    enabled: bool = setting(False, parse_bool, doc="gate manifest pulls on scan results")
    block_severity: str = setting("CRITICAL", parse_severity, doc="block at or above this")
    allow: tuple[str, ...] = setting(
        (), parse_cves, doc='CVE ids that never block ("CVE-1,CVE-2" in the environment)'
    )
    unscanned: str = setting(
        "allow", choice("allow", "deny", "wait"), doc="no finished scan: wait up to wait_seconds"
    )
    wait_seconds: float = setting(60.0, parse_duration, doc="how long unscanned = wait waits")
    repositories: GateOverrides = setting(
        (), parse_gate_overrides,
        doc="per repository prefix (longest wins): a table of the keys above; allow adds "
        "to the global list, the rest replace (environment: JSON)",
    )  # fmt: skip
    decision_ttl: float = setting(
        600.0, parse_duration, doc="a decision per repository and digest is reused this long"
    )

    def policy_table(self) -> dict[str, Any]:
        """The mapping ``GatePolicy.from_mapping`` takes."""
        return {
            "block_severity": self.block_severity,
            "allow": list(self.allow),
            "unscanned": self.unscanned,
            "wait_seconds": self.wait_seconds,
            "repositories": overrides_table(self.repositories),
        }


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
