"""``gar-proxy serve``: uvicorn on one pre-bound socket, the zero-copy protocol if it loads."""

from __future__ import annotations

import logging
import socket
from typing import Any

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
    sock = bind(settings.server.host, settings.server.port)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(settings),
        http=http,
        log_config=None,
        access_log=False,  # proxy.routes.observe writes one richer line per request
        timeout_graceful_shutdown=10,
        server_header=False,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                # One line that tools (and tests, with port 0) can wait for.
                print(f"gar-proxy listening on http://{host}:{port}", flush=True)

    # Server.run, not asyncio.run(serve()): it builds the loop uvicorn picked (uvloop
    # when installed); asyncio.run would always use the slower stdlib loop.
    Server(config).run(sockets=[sock])
    return 0
