"""Settings: built once from TOML, then environment, then CLI flags; frozen; passed in.

Every setting is declared once, below, as a field of its component's group
(``server``, ``upstream``, ``gcp``, ``cache``) whose metadata gives its TOML key,
parser, extra environment names and whether it is a secret. Each component receives
its own group, not the whole ``Settings``. The loader, ``config check`` and the docs
read the same declarations. Every key has one environment name,
``GAR_PROXY_<SECTION>_<NAME>`` (``cache.max_size`` is ``GAR_PROXY_CACHE_MAX_SIZE``);
older short names and the original design's (``GAR_LOCATION``, ``GAR_TIMEOUT_SECONDS``,
``GAR_PROJECT_ID``) and Google's own (``GOOGLE_APPLICATION_CREDENTIALS``) stay
accepted. A ``GAR_PROXY_*`` variable that names no setting, like a bad value, stops
start-up with one line::

    gar-proxy: config: cache.max_size (GAR_PROXY_CACHE_MAX_SIZE): expected a size like
    '50GiB', got 'lots'
    gar-proxy: config: GAR_PROXY_CACHE_MAXSIZE names no setting; did you mean
    GAR_PROXY_CACHE_MAX_SIZE?

This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config_values import (
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
from proxy.redact import redact, remember_secret
from proxy.tag_policies import TagRule, parse_tag_policies

ENV_PREFIX = "GAR_PROXY_"
CONFIG_ENV = "GAR_PROXY_CONFIG"  # the TOML file; not a setting itself


class ConfigError(Exception):
    """A setting could not be read; the message is one line naming the key."""


def setting(
    default: Any,
    parse: Callable[[Any], Any],
    *aliases: str,
    secret: bool = False,
    doc: str = "",
) -> Any:
    """A field with its declaration: parser, extra environment names, secrecy, one line
    of documentation. The TOML key is ``<group>.<field name>``."""
    metadata = {"parse": parse, "aliases": aliases, "secret": secret, "doc": doc}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple")
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


@dataclass(frozen=True)
class ServerSettings:
    listen: tuple[str, int] = setting(
        ("127.0.0.1", 5000), parse_listen, "GAR_PROXY_LISTEN", doc="HOST:PORT; port 0 picks one"
    )
    log_level: str = setting(
        "info", choice("debug", "info", "warning", "error"), "GAR_PROXY_LOG_LEVEL"
    )
    log_format: str = setting(
        "auto",
        choice("auto", "console", "text", "json"),
        "GAR_PROXY_LOG_FORMAT",
        doc="auto: console on a terminal, JSON otherwise (text is console)",
    )
    shutdown_grace: float = setting(
        30.0, parse_duration, doc="on SIGTERM, how long running pulls and fills may finish"
    )
    allow_delete: bool = setting(
        False, parse_bool, "GAR_PROXY_ALLOW_DELETE", doc="forward manifest DELETEs upstream"
    )
    push_concurrency: int = setting(
        5, parse_positive_int, "GAR_PROXY_PUSH_CONCURRENCY", doc="blobs at a time in a push"
    )
    # Unfinished requests end (proxy/http/limits.py). 0 turns a timeout off.
    header_timeout: float = setting(
        20.0, parse_duration, doc="a request's line and headers must arrive within this"
    )
    idle_timeout: float = setting(
        15.0, parse_duration, doc="close a connection with no request for this long"
    )
    body_timeout: float = setting(
        60.0, parse_duration, doc="close a request whose body sends nothing for this long"
    )
    tls_handshake_timeout: float = setting(
        10.0, parse_duration, doc="a TLS handshake must finish within this"
    )
    send_timeout: float = setting(
        60.0, parse_duration, doc="close a connection whose answer the client takes no byte of"
    )
    max_connections: int = setting(
        4096, parse_positive_int, doc="open client connections; more are answered 503"
    )
    max_connections_per_client: int = setting(
        512, parse_positive_int, doc="open connections from one client address"
    )
    # Upload sessions each hold a row, a spool file and an upstream session for 24 h.
    max_upload_sessions: int = setting(
        4096, parse_positive_int, doc="upload sessions open at once; more are answered 429"
    )
    max_upload_sessions_per_identity: int = setting(
        512, parse_positive_int, doc="upload sessions one identity has open at once"
    )
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told: any local process could
    # then name itself anew to dodge the failed-login throttle (proxy/commands/serve.py).
    trusted_proxies: tuple[Network, ...] = setting(
        (),
        parse_networks,
        doc="front proxies (addresses, networks) whose X-Forwarded-For names the client; "
        "none by default",
    )

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]


@dataclass(frozen=True)
class UpstreamSettings:
    url: str = setting(
        "https://{location}-docker.pkg.dev",
        parse_str,
        "GAR_PROXY_UPSTREAM_URL",
        doc="registry URL; {location} makes it GAR",
    )
    regional_url: str = setting(
        "https://docker.{location}.rep.pkg.dev",
        parse_str,
        doc="GAR's regional endpoint, for names a client gave as docker.LOCATION.rep.pkg.dev",
    )
    project_domains: tuple[str, ...] = setting(
        (),
        parse_hosts,
        doc="domains of domain-scoped projects (example.com for example.com:proj): bare "
        "names example.com/proj/REPO/IMAGE are then GAR's, not another registry's",
    )
    auth: str = setting("gcp", choice("gcp", "basic", "bearer", "none"), "GAR_PROXY_AUTH")
    username: str | None = setting(None, parse_optional_str, "GAR_PROXY_USERNAME")
    password: str | None = setting(None, parse_optional_str, "GAR_PROXY_PASSWORD", secret=True)
    password_file: Path | None = setting(
        None, parse_optional_path, doc="file holding the basic password (instead of password)"
    )
    token_file: Path | None = setting(
        None, parse_optional_path, doc="file holding the token for auth = bearer"
    )
    tier: bool = setting(
        False, parse_bool, doc="upstream is another gar-proxy: ?ns= and hosts go to it in the name"
    )
    location: str = setting(
        "us", parse_location, "GAR_LOCATION", doc="location when nothing else says"
    )
    routes: tuple[Route, ...] = setting((), parse_routes, "GAR_PROXY_ROUTES")
    resolve_locations: bool = setting(True, parse_bool, "GAR_PROXY_RESOLVE_LOCATIONS")
    mirrors: tuple[Mirror, ...] = setting(
        (), parse_mirrors, doc="[[mirrors]]: registry host -> GAR remote repository"
    )
    check_repositories: bool = setting(
        True, parse_bool, doc="read locations and repository formats from the GAR API"
    )
    metadata_api_url: str = setting(
        "https://artifactregistry.googleapis.com", parse_str, "GAR_PROXY_METADATA_API_URL"
    )
    analysis_api_url: str = setting(
        "https://containeranalysis.googleapis.com",
        parse_str,
        doc="Container Analysis API (vulnerabilities, SBOMs)",
    )
    storage_api_url: str = setting(
        "https://storage.googleapis.com", parse_str, doc="Cloud Storage: SBOMs, cache.shared"
    )
    trusted_realm_hosts: tuple[str, ...] = setting((), parse_hosts, "GAR_PROXY_TRUSTED_REALM_HOSTS")
    timeout: float = setting(30.0, parse_duration, "GAR_TIMEOUT_SECONDS")
    connect_timeout: float = setting(10.0, parse_duration, "GAR_PROXY_CONNECT_TIMEOUT")
    max_connections: int = setting(100, parse_positive_int, "GAR_PROXY_POOL_SIZE")
    max_keepalive: int = setting(20, parse_int, "GAR_PROXY_POOL_KEEPALIVE")
    keepalive_expiry: float = setting(
        90.0, parse_duration, doc="how long an idle upstream connection is kept for reuse"
    )
    http2: bool = setting(False, parse_bool, "GAR_PROXY_HTTP2")
    lean_bodies: bool = setting(
        True, parse_bool,
        doc="blob bodies on their own HTTP/1.1 connections, read straight into 4 MiB "
        "batches (false: through httpx like every other call)",
    )  # fmt: skip
    retries: int = setting(4, parse_int, "GAR_PROXY_RETRIES")
    backoff_base: float = setting(0.5, parse_duration, "GAR_PROXY_BACKOFF_BASE")
    backoff_max: float = setting(30.0, parse_duration, "GAR_PROXY_BACKOFF_MAX")
    read_rate_per_minute: int = setting(60_000, parse_int, "GAR_PROXY_READ_RATE")
    write_rate_per_minute: int = setting(18_000, parse_int, "GAR_PROXY_WRITE_RATE")
    ca_file: Path | None = setting(
        None, parse_optional_path, doc="CA bundle (PEM) for upstream TLS instead of the system's"
    )
    check_interval: float = setting(
        30.0, parse_duration,
        doc="how often a background GET /v2/ with the credentials checks the upstream; 0: never",
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
    project_id: str | None = setting(
        None,
        parse_optional_str,
        "GAR_PROJECT_ID",
        "GOOGLE_CLOUD_PROJECT",
        "GCLOUD_PROJECT",
        doc="default project for REPO/IMAGE names that leave it out",
    )
    credentials_file: Path | None = setting(
        None, parse_optional_path, "GOOGLE_APPLICATION_CREDENTIALS"
    )
    service_account_key: str | None = setting(
        None, parse_optional_str, "GAR_SERVICE_ACCOUNT_KEY", secret=True
    )
    adc_file: Path | None = setting(None, parse_optional_path, "GAR_PROXY_ADC_FILE")
    metadata_timeout: float = setting(2.0, parse_duration, "GAR_PROXY_METADATA_TIMEOUT")
    metadata_host: str = setting("metadata.google.internal", parse_str, "GCE_METADATA_HOST")
    read_only: bool = setting(False, parse_bool, "GAR_PROXY_READ_ONLY")


@dataclass(frozen=True)
class CacheSettings:
    dir: Path = setting(Path("~/.cache/gar-proxy"), parse_path, "GAR_PROXY_CACHE_DIR")
    max_size: int = setting(50 * 1024**3, parse_size, "GAR_PROXY_CACHE_MAX_SIZE")
    tag_ttl: float = setting(60.0, parse_duration, "GAR_PROXY_TAG_TTL")
    revalidate_window: float = setting(
        300.0, parse_duration,
        doc="past a tag's TTL, answer from the cache and revalidate in the background for "
        "this long; then a request waits for upstream (0: always wait)",
    )  # fmt: skip
    tag_policies: tuple[TagRule, ...] = setting(
        (), parse_tag_policies,
        doc="[[tag_policies]]: repository prefix and/or tag regex -> ttl or immutable; "
        "first match wins",
    )  # fmt: skip
    max_stale: float = setting(7 * 24 * 3600.0, parse_duration, "GAR_PROXY_MAX_STALE")
    stale_recheck: float = setting(10.0, parse_duration, "GAR_PROXY_STALE_RECHECK")
    manifest_max_size: int = setting(64 * 1024**2, parse_size, "GAR_PROXY_MANIFEST_MAX_SIZE")
    fill_timeout: float = setting(3600.0, parse_duration, "GAR_PROXY_FILL_TIMEOUT")
    offline: bool = setting(False, parse_bool, "GAR_PROXY_OFFLINE", doc="never call upstream")
    max_age: float = setting(
        0.0, parse_duration, doc="evict what was not read for this long (30d); 0: never"
    )
    warm: tuple[WarmSchedule, ...] = setting(
        (),
        parse_warm_schedule,
        doc="[[warm]]: images whose matching tags, and images files name, are kept cached",
    )
    negative_ttl: float = setting(
        30.0, parse_duration, doc="remember an upstream 404 this long; 0 turns it off"
    )

    min_free: int = setting(
        1024**3, parse_size, doc="/readyz fails when the cache disk has less free space"
    )
    shared: SharedBucket | None = setting(
        None, parse_shared_bucket, doc="gs://BUCKET/PREFIX: a blob tier shared by replicas"
    )


@dataclass(frozen=True)
class AccessSettings:
    """Who may use the proxy (proxy/auth/, docs/DESIGN.md "Client access")."""

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
    cert_file: Path | None = setting(None, parse_optional_path, doc="PEM chain; enables TLS")
    key_file: Path | None = setting(None, parse_optional_path, doc="PEM private key")
    reload_interval: float = setting(
        30.0, parse_duration, doc="how often to look for new cert/key files"
    )


@dataclass(frozen=True)
class VulnerabilityGateSettings:
    """Refuse images whose finished scan has findings at or above a severity
    (``proxy.gar.policy`` reads these; its messages name the keys)."""

    enabled: bool = setting(False, parse_bool, doc="gate manifest pulls on scan results")
    block_severity: str = setting("CRITICAL", parse_severity, doc="block at or above this")
    allow: tuple[str, ...] = setting((), parse_cves, doc="CVE ids that never block")
    unscanned: str = setting("allow", choice("allow", "deny", "wait"), doc="no finished scan")
    wait_seconds: float = setting(60.0, parse_duration, doc="how long unscanned=wait waits")
    repositories: GateOverrides = setting(
        (), parse_gate_overrides, doc="per repository prefix: a table of the keys above"
    )
    decision_ttl: float = setting(600.0, parse_duration, doc="a decision is reused this long")

    def policy_table(self) -> dict[str, Any]:
        """The mapping ``GatePolicy.from_mapping`` takes."""
        return {
            "block_severity": self.block_severity,
            "allow": list(self.allow),
            "unscanned": self.unscanned,
            "wait_seconds": self.wait_seconds,
            "repositories": overrides_table(self.repositories),
        }


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    upstream: UpstreamSettings = dataclasses.field(default_factory=UpstreamSettings)
    gcp: GcpSettings = dataclasses.field(default_factory=GcpSettings)
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)
    access: AccessSettings = dataclasses.field(default_factory=AccessSettings)
    tls: TlsSettings = dataclasses.field(default_factory=TlsSettings)
    vulnerability_gate: VulnerabilityGateSettings = dataclasses.field(
        default_factory=VulnerabilityGateSettings
    )


@dataclass(frozen=True)
class Spec:
    """One setting's declaration, read off its field."""

    key: str  # TOML "section.name"
    group: str
    name: str
    parse: Callable[[Any], Any]
    env: tuple[str, ...]  # GAR_PROXY_SECTION_NAME first, then the aliases
    secret: bool
    doc: str


GROUPS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "gcp": GcpSettings,
    "cache": CacheSettings,
    "access": AccessSettings,
    "tls": TlsSettings,
    "vulnerability_gate": VulnerabilityGateSettings,
}


def specs() -> Iterator[Spec]:
    for group, kind in GROUPS.items():
        for item in dataclasses.fields(kind):
            meta = item.metadata
            key = f"{group}.{item.name}"
            canonical = ENV_PREFIX + key.upper().replace(".", "_")
            env = (canonical, *[a for a in meta["aliases"] if a != canonical])
            yield Spec(key, group, item.name, meta["parse"], env, meta["secret"], meta["doc"])


SPECS: dict[str, Spec] = {spec.key: spec for spec in specs()}
_ENV_NAMES = {name for spec in SPECS.values() for name in spec.env} | {CONFIG_ENV}


# Arrays of tables that may sit at the top of the file, and the setting each one is.
TOP_LEVEL_LISTS = {
    "mirrors": "upstream.mirrors",
    "warm": "cache.warm",
    "tag_policies": "cache.tag_policies",
}


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


def _flatten(document: Mapping[str, Any], path: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if section in TOP_LEVEL_LISTS and isinstance(table, list):
            flat[TOP_LEVEL_LISTS[section]] = (
                table  # [[mirrors]] reads better than [[upstream.mirrors]]
            )
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{section} ({path}): expected a [{section}] table")
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in SPECS:
                hint = difflib.get_close_matches(key, SPECS, n=1)
                maybe = f"; did you mean {hint[0]}?" if hint else ""
                raise ConfigError(f"{key} ({path}): unknown setting{maybe}")
            flat[key] = value
    return flat


def _check_env_names(env: Mapping[str, str]) -> None:
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in _ENV_NAMES:
            hint = difflib.get_close_matches(name, sorted(_ENV_NAMES), n=1, cutoff=0.7)
            maybe = f"; did you mean {hint[0]}?" if hint else ""
            raise ConfigError(f"{name} names no setting{maybe}")


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """TOML file < environment < ``overrides`` (CLI flags, keyed like ``cache.dir``)."""
    env = dict(os.environ if env is None else env)
    _check_env_names(env)
    values: dict[str, Any] = _default_paths(env)
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"config file {config_file}: {error}") from None
        for key, raw in _flatten(document, str(config_file)).items():
            values[key] = _parse(SPECS[key], raw, str(config_file))
    for spec in SPECS.values():
        name = next((n for n in spec.env if env.get(n, "") != ""), None)
        if name is not None:
            values[spec.key] = _parse(spec, env[name], name)
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in SPECS:
            raise ConfigError(f"{key}: unknown setting")
        values[key] = _parse(SPECS[key], raw, "command line")
    settings = _build(values)
    _check(settings)
    _remember_secrets(settings)
    return settings


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


def _check(settings: Settings) -> None:
    upstream = settings.upstream
    if upstream.auth == "basic" and not (
        upstream.username and (upstream.password or upstream.password_file)
    ):
        raise ConfigError(
            "upstream.auth (basic): needs upstream.username and upstream.password(_file)"
        )
    if upstream.auth == "bearer" and not upstream.token_file:
        raise ConfigError("upstream.auth (bearer): needs upstream.token_file")
    listens = [settings.server.listen] + [m.listen for m in upstream.mirrors if m.listen]
    if len({listen for listen in listens if listen[1]}) != len([x for x in listens if x[1]]):
        raise ConfigError(
            f"mirrors: listen addresses must differ from each other and server.listen: {listens}"
        )
    if not upstream.url.startswith(("http://", "https://")):
        raise ConfigError(f"upstream.url: expected an http(s) URL, got {upstream.url!r}")
    _check_exposure(settings)
    _check_gate(settings)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_exposure(settings: Settings) -> None:
    """Beyond loopback, anyone who can connect reads what our credentials can: refuse
    that unless clients must authenticate or anonymous access is asked for."""
    access, (host, port) = settings.access, settings.server.listen
    if not is_loopback(host) and not access.enabled and not access.anonymous:
        raise ConfigError(
            f"server.listen ({host}:{port}) is not loopback and no client auth is set: "
            "set access.htpasswd_file or access.tokens_file, or access.anonymous = true"
        )
    tls = settings.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError("tls.cert_file and tls.key_file: set both or neither")
    ca_file = settings.upstream.ca_file
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"upstream.ca_file ({ca_file}): no such file")


def _check_gate(settings: Settings) -> None:
    from proxy.gar.policy import GatePolicy, GatePolicyError  # pure rules, no I/O

    gate = settings.vulnerability_gate
    try:
        GatePolicy.from_mapping(gate.policy_table())
    except (GatePolicyError, ValueError, TypeError, AttributeError) as error:
        raise ConfigError(str(error)) from None
    if gate.enabled and not settings.upstream.is_gar:
        raise ConfigError(
            "vulnerability_gate.enabled: needs Artifact Registry upstream (upstream.url with"
            " {location}); Container Analysis names images by their GAR URL"
        )


def value_of(settings: Settings, spec: Spec) -> Any:
    return getattr(getattr(settings, spec.group), spec.name)


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
