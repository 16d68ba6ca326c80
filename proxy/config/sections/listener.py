"""The proxy's own listener: ``[server]`` (its address, logs, what clients may hold
open), ``[access]`` (who may use it) and ``[tls]`` (HTTPS on it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.config.fields import setting
from proxy.config.values import (
    Network,
    choice,
    parse_bool,
    parse_duration,
    parse_int,
    parse_listen,
    parse_networks,
    parse_optional_path,
    parse_positive_int,
    parse_size,
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
