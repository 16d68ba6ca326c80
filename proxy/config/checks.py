"""Checks across settings, once they are all read: each failure is one line naming
the keys (``ConfigError``)."""

from __future__ import annotations

import ipaddress

from proxy.config.fields import ConfigError
from proxy.config.groups import Settings


def check(settings: Settings) -> None:
    upstream = settings.upstream
    if upstream.auth == "basic" and not (
        upstream.username and (upstream.password or upstream.password_file)
    ):
        raise ConfigError(
            "upstream.auth (basic): needs upstream.username and upstream.password(_file)"
        )
    if upstream.auth == "bearer" and not upstream.token_file:
        raise ConfigError("upstream.auth (bearer): needs upstream.token_file")
    mirrors = settings.routing.mirrors
    listens = [settings.server.listen] + [m.listen for m in mirrors if m.listen]
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
