"""A tiny HTTP forward proxy on 127.0.0.1 that records what passes through it.

``CONNECT host:port`` opens a tunnel (HTTPS upstreams); an absolute-form request
(``GET http://host:port/path``) is sent on to its origin with ``Connection: close``.
``seen`` lists ``(method, target)`` per request, for tests to assert on::

    with ForwardProxy() as egress:                 # egress.url == "http://127.0.0.1:PORT"
        ... HTTP_PROXY=egress.url ...
    assert ("CONNECT", "127.0.0.1:8443") in egress.seen
"""

from __future__ import annotations

import selectors
import socket
import socketserver
import threading
import urllib.parse
from typing import Any

HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authorization"}


def _pipe(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(one, selectors.EVENT_READ, other)
        selector.register(other, selectors.EVENT_READ, one)
        while True:
            for key, _ in selector.select(timeout=30):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    rbufsize = 0  # unbuffered: a body byte read with the head would miss the pipe

    def handle(self) -> None:
        request_line = self.rfile.readline(65536).decode("latin-1").rstrip("\r\n")
        headers = []
        while (line := self.rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
            headers.append(line.decode("latin-1").rstrip("\r\n"))
        method, target, _version = request_line.split(" ", 2)
        agent = next(
            (h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("user-agent:")), ""
        )
        with self.server.lock:
            self.server.seen.append((method, target))
            self.server.agents.append(agent)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=30) as origin:
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                _pipe(self.connection, origin)
            return
        url = urllib.parse.urlsplit(target)
        path = url.path + (f"?{url.query}" if url.query else "")
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in HOP_BY_HOP]
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        with socket.create_connection((url.hostname, url.port or 80), timeout=30) as origin:
            origin.sendall(head.encode("latin-1"))
            _pipe(self.connection, origin)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str]] = []
        self.agents: list[str] = []  # User-Agent of each request, "" if none
        self.lock = threading.Lock()


class ForwardProxy:
    def __init__(self) -> None:
        self._server = _Server()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def seen(self) -> list[tuple[str, str]]:
        with self._server.lock:
            return list(self._server.seen)

    @property
    def agents(self) -> list[str]:
        with self._server.lock:
            return list(self._server.agents)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
