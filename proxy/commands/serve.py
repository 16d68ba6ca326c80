"""``gar-proxy serve``: uvicorn on pre-bound sockets (``server.listen``, then each mirror's
own ``listen``), the zero-copy protocol if it loads."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import resource
import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Any

from proxy.auth.tls import ReloadingCertificate
from proxy.commands import preflight
from proxy.config import ConfigError, Settings, is_loopback

log = logging.getLogger("gar_proxy")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets of that
    # protocol, and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def keep_alive(settings: Settings) -> int:
    """uvicorn's own keep-alive timeout, agreeing with ``server.idle_timeout`` (0: off)."""
    idle = settings.server.idle_timeout
    return max(1, math.ceil(idle)) if idle > 0 else 365 * 24 * 3600


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings that follow ours (``serve`` and the tests' servers alike).

    X-Forwarded-For and -Proto are believed only from ``server.trusted_proxies``:
    uvicorn's own default trusts 127.0.0.1 (and its ``FORWARDED_ALLOW_IPS``), so any
    local process could name itself anew on each try and dodge the failed-login
    throttle, or pass for a remote client. uvicorn takes the last address in the chain
    that is not itself a trusted proxy, so a client cannot name itself through nginx's
    ``$proxy_add_x_forwarded_for``."""
    trusted = [str(network) for network in settings.server.trusted_proxies]
    return {
        "timeout_keep_alive": keep_alive(settings),
        "server_header": False,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
    }


def warn_if_anonymous(settings: Settings) -> None:
    if settings.access.anonymous and not is_loopback(settings.server.host):
        log.warning(
            "ANONYMOUS ACCESS: anyone who can reach %s:%d can pull%s with this proxy's "
            "credentials (access.anonymous = true)",
            settings.server.host,
            settings.server.port,
            "" if settings.access.enabled else " and push",
        )


def bind_mirrors(settings: Settings) -> tuple[Settings, list[socket.socket]]:
    """One socket per mirror with a ``listen`` of its own; the settings come back with
    the ports actually bound (port 0 picks one), which is how the app tells a request
    on a mirror's socket (ASGI ``scope["server"]``) from one on the main socket."""
    sockets: list[socket.socket] = []
    mirrors = []
    try:
        for mirror in settings.routing.mirrors:
            if mirror.listen is not None:
                sock = bind(*mirror.listen)
                sockets.append(sock)
                mirror = dataclasses.replace(mirror, listen=sock.getsockname()[:2])
            mirrors.append(mirror)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    routing = dataclasses.replace(settings.routing, mirrors=tuple(mirrors))
    return dataclasses.replace(settings, routing=routing), sockets


# Descriptors beyond client connections: the cache's files, SQLite, upstream pools.
DESCRIPTOR_RESERVE = 1024


def raise_descriptor_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (as far as the hard limit
    allows, as Go's runtime does for every server); the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-files limit to %d: %s", target, error)
    return soft


def _protocol(settings: Settings, tls: ReloadingCertificate | None) -> tuple[Any, Any]:
    """(uvicorn's ``http``, the connections it counts or None): the guarded zero-copy
    protocol (proxy/http/guarded.py), or uvicorn's own when it does not load."""
    try:  # blob bodies go file -> socket in the kernel (proxy/http/server.py)
        from proxy.http.guarded import guarded_protocol
        from proxy.http.limits import ConnectionLimits, Connections
    except ImportError as error:  # no httptools, or a uvicorn reorganised
        log.warning("zero-copy sends and connection limits off: %s", error)
        return "auto", None
    limits = ConnectionLimits.of(settings.server)
    soft = raise_descriptor_limit(limits.max_connections + DESCRIPTOR_RESERVE)
    if soft != resource.RLIM_INFINITY and soft < limits.max_connections + DESCRIPTOR_RESERVE:
        log.warning(
            "open-files limit %d leaves too few descriptors for server.max_connections = %d:"
            " raise the limit (ulimit -n, LimitNOFILE=) or lower the setting",
            soft,
            limits.max_connections,
        )
    connections = Connections(limits)
    return guarded_protocol(connections, tls.listener if tls else None), connections


def run(settings: Settings) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.logs import configure

    configure(settings.server.log_level, settings.server.log_format)
    try:
        preflight.check(settings)
        tls = ReloadingCertificate(settings.tls) if settings.tls.cert_file else None
        try:
            sock = bind(settings.server.host, settings.server.port)
        except OSError as error:
            raise preflight.bind_error(settings.server.host, settings.server.port, error) from None
        settings, mirror_sockets = bind_mirrors(settings)
        app = create_app(settings)
    except preflight.StartupError as error:
        print(f"gar-proxy serve: {error}", file=sys.stderr, flush=True)
        return 1
    except (ConfigError, OSError, ssl.SSLError) as error:
        print(f"gar-proxy: config: {error}", file=sys.stderr)
        return 2
    warn_if_anonymous(settings)
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    http, connections = _protocol(settings, tls)
    config = uvicorn.Config(
        app,
        http=http,
        log_config=None,
        access_log=False,  # proxy.routes.observe writes one richer line per request
        timeout_graceful_shutdown=max(1, round(settings.server.shutdown_grace)),
        **uvicorn_options(settings),
    )
    if tls is not None and connections is None:
        config.load()
        config.ssl = tls.listener  # without the guarded protocol, uvicorn does TLS

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                # uvicorn re-raises SIGTERM after a graceful stop, so the process would
                # die of it (143); a stop that was asked for and drained is exit 0.
                self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                for mirror in settings.routing.mirrors:
                    if mirror.listen is not None:
                        address = "http://{}:{}".format(*mirror.listen)
                        print(f"gar-proxy mirror {mirror.host} listening on {address}", flush=True)
                # One line that tools (and tests, with port 0) can wait for.
                print(f"gar-proxy listening on {scheme}://{host}:{port}", flush=True)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            if connections is not None:
                connections.summary()  # what the last interval noted, not lost

    # Server.run, not asyncio.run(serve()): it builds the loop uvicorn picked (uvloop
    # when installed); asyncio.run would always use the slower stdlib loop.
    server = Server(config)
    server.run(sockets=[sock, *mirror_sockets])
    if not server.started:  # the lifespan failed (uvicorn logged why) and closed it all
        print("gar-proxy serve: start-up failed; see the error above", file=sys.stderr)
        return 1
    return 0
