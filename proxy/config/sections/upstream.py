"""The registry behind the proxy: ``[upstream]`` (where and who the proxy is to it),
``[gcp]`` (Google credentials), ``[routing]`` (which repository and location a name goes
to), ``[transport]`` (timeouts, connections, retries), ``[quotas]`` (pacing per project
and location) and ``[apis]`` (Google's REST APIs beside the registry)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.config.fields import setting
from proxy.config.values import (
    Mirror,
    Route,
    choice,
    parse_bool,
    parse_duration,
    parse_hosts,
    parse_int,
    parse_location,
    parse_mirrors,
    parse_optional_path,
    parse_optional_str,
    parse_positive_int,
    parse_routes,
    parse_str,
)


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
