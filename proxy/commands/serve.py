"""``gar-proxy serve``: uvicorn on one pre-bound socket, the zero-copy protocol if it loads."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Iterator
from typing import Any

from proxy.commands import preflight
from proxy.config import Settings

log = logging.getLogger("gar_proxy")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets of that
    # protocol, and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def run(settings: Settings) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.logs import configure

    configure(settings.server.log_level, settings.server.log_format)
    http: Any = "auto"
    try:  # blob bodies go file -> socket in the kernel (proxy/http/server.py)
        from proxy.http.server import ZeroCopyProtocol

        http = ZeroCopyProtocol
    except ImportError as error:  # no httptools, or a uvicorn reorganised
        log.warning("zero-copy blob sends off: %s", error)
    try:
        preflight.check_credentials(settings)
        preflight.check_cache_dir(settings.cache.dir)
        try:
            sock = bind(settings.server.host, settings.server.port)
        except OSError as error:
            raise preflight.bind_error(settings.server.host, settings.server.port, error) from None
    except preflight.StartupError as error:
        print(f"gar-proxy serve: {error}", file=sys.stderr, flush=True)
        return 1
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(settings),
        http=http,
        log_config=None,
        access_log=False,  # proxy.routes.observe writes one richer line per request
        timeout_graceful_shutdown=max(1, round(settings.server.shutdown_grace)),
        server_header=False,
    )

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
                # One line that tools (and tests, with port 0) can wait for.
                print(f"gar-proxy listening on http://{host}:{port}", flush=True)

    # Server.run, not asyncio.run(serve()): it builds the loop uvicorn picked (uvloop
    # when installed); asyncio.run would always use the slower stdlib loop.
    Server(config).run(sockets=[sock])
    return 0
