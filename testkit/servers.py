"""Run ASGI apps under a real uvicorn on 127.0.0.1, port 0, in a background thread.

Streaming and disconnects only behave for real over a socket (httpx's ASGITransport
reads whole bodies), so every fake and the proxy itself run this way in tests::

    with serve_in_thread(app) as url:       # url == "http://127.0.0.1:PORT"
        httpx.get(url + "/v2/")
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


def bind_loopback(port: int = 0) -> socket.socket:
    """A socket on 127.0.0.1: a free port, or ``port`` again (a server restarted on the
    address its clients know)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class ThreadedServer:
    """A uvicorn server on its own thread and event loop; ``url`` once started."""

    def __init__(
        self,
        app: Any,
        *,
        ssl_context: ssl.SSLContext | None = None,
        extra_sockets: list[socket.socket] | None = None,
        scheme: str | None = None,
        port: int = 0,
        **config: Any,
    ) -> None:
        """``scheme``: for ``url`` when the protocol does TLS itself (no ``ssl_context``);
        ``port``: a fixed one (a restart on the same port), else any free one."""
        self.sock = bind_loopback(port)
        self.extra_sockets = list(extra_sockets or [])
        self.port: int = self.sock.getsockname()[1]
        scheme = scheme or ("https" if ssl_context else "http")
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.config = uvicorn.Config(
            app,
            log_level=config.pop("log_level", "warning"),
            lifespan=config.pop("lifespan", "on"),
            **config,
        )
        if ssl_context is not None:  # as ``gar-proxy serve`` gives uvicorn its context
            self.config.load()
            self.config.ssl = ssl_context
        self.server = uvicorn.Server(self.config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"uvicorn-{self.port}")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock, *self.extra_sockets]))
        self.loop.close()

    def start(self) -> ThreadedServer:
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("test server failed to start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        for sock in (self.sock, *self.extra_sockets):
            sock.close()


@contextlib.contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[str]:
    server = ThreadedServer(app, **config).start()
    try:
        yield server.url
    finally:
        server.stop()


def accept_queue(listener: socket.socket) -> tuple[int, int]:
    """(connections waiting to be accepted, the most it holds): Linux reports them for
    a listening socket as ``tcpi_unacked`` and ``tcpi_sacked`` of ``TCP_INFO``."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("II", info, 24)


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a listener that never accepts and whose accept
    queue is full, so a new connection's SYN is dropped (Linux: ``ListenOverflows``)
    and ``connect`` waits as it would for a host that vanished behind a firewall.

    ``listen(0)`` queues one connection; a first connect of ours takes that place,
    and the queue is read back (``TCP_INFO``) until the kernel counts it full."""
    listener = bind_loopback()
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname()[:2], timeout=5)
    try:
        deadline = time.monotonic() + 5
        while (queue := accept_queue(listener))[0] <= queue[1]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the accept queue never filled: {queue}")
            time.sleep(0.001)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        filler.close()
        listener.close()
