"""uvicorn's httptools protocol, plus the ASGI ``http.response.zerocopysend`` extension.

uvicorn copies every body byte through Python: a blob hit is read into a buffer and
written to the socket, about a third of a core per GiB on the event loop thread,
which also runs every other request. With this protocol a response may instead send
``{"type": "http.response.zerocopysend", "file": fd, "offset": o, "count": n,
"more_body": b}`` (the ASGI spec's extension, advertised in ``scope["extensions"]``)
and the kernel copies file to socket (``proxy.http.sendfile``). Routes fall back to
plain bodies when the extension is absent (another server, TLS, h11), so nothing
depends on it but speed.

It hooks uvicorn in two documented-by-code places, each checked when it is used:
the cycle uvicorn makes per request is given this subclass's ``send``, and the
connection's write buffer high-water mark is 0, so a cycle's ``drain`` returns only
once uvicorn's buffer is empty: file bytes must not overtake buffered headers.

A request body is kept as the pieces httptools hands over (``_Pieces``) and joined
once, when the app asks for it: uvicorn appends each piece to a ``bytearray`` and then
copies that into ``bytes``, two copies of every pushed byte on the event loop thread;
here a lone piece is handed on as it is and several are joined in one copy.

It also caps a request's headers (request line included) at ``MAX_HEADER_BYTES``:
httptools has no limit of its own, and 60 MB of headers were once read and parsed
whole. Over the cap the client gets ``431`` and the connection ends; what it still
sends meanwhile is read and dropped for a moment, so that it sees the 431 rather than
a reset.
"""

from __future__ import annotations

import asyncio
import http
import json
import os
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.http.sendfile import PeerGone, PeerStalled, sendfile
from proxy.oci.errors import ErrorCode, RegistryError

ZEROCOPY = "http.response.zerocopysend"
# Ours: end a response whose headers are out but whose body cannot be finished (its
# upstream failed mid-fill) by closing the connection, the one way HTTP/1.1 says
# "incomplete", without uvicorn's "Exception in ASGI application" traceback per client.
ABORT = "gar-proxy.response.abort"
# Total bytes of request line and headers; distribution (Go) allows 1 MiB, nginx 32 KiB
# per line; docker's largest headers (a bearer token) are under 4 KiB.
MAX_HEADER_BYTES = 64 * 1024
LINGER_SECONDS = 1.0  # reading and dropping what a refused client still sends


class HeadersTooLarge(Exception):
    """Raised in a parser callback: stops httptools before it builds a request."""


class _Pieces:
    """A request body's pieces, as uvicorn's ``cycle.body`` (which it only grows with
    ``+=``, measures with ``len`` and takes with ``bytes``): nothing is copied until
    ``receive()`` takes them, and a lone piece not even then."""

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def __iadd__(self, piece: bytes) -> _Pieces:
        self._parts.append(piece)
        self._size += len(piece)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)


class ZeroCopyCycle(RequestResponseCycle):
    # Seconds a file send may wait for the client to take a byte (None: for ever), and
    # who to tell when that ends it (proxy.http.guarded sets both).
    send_idle: float | None = None
    on_stall: Callable[[], None] | None = None

    async def send(self, message: Any) -> None:
        if message["type"] == ABORT:
            if self.response_started and not self.response_complete:
                self._gone()
            return
        if message["type"] != ZEROCOPY:
            await super().send(message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.transport.is_closing():
            self._gone()
        if self.disconnected:
            return
        if not self.response_started or self.response_complete or self.chunked_encoding:
            raise RuntimeError(f"'{ZEROCOPY}' needs a started response with a Content-Length")
        more_body = bool(message.get("more_body", False))
        count = int(message["count"])
        if self.scope["method"] != "HEAD" and count:
            if count > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            await self._send_file(_fileno(message["file"]), int(message.get("offset", 0)), count)
            if self.disconnected:
                return
            self.expected_content_length -= count
        await super().send({"type": "http.response.body", "body": b"", "more_body": more_body})

    async def _send_file(self, file: int, offset: int, count: int) -> None:
        while self.transport.get_write_buffer_size():  # high-water 0 makes this rare
            await asyncio.sleep(0.001)
            if self.transport.is_closing():
                self._gone()
                return
        sock = self.transport.get_extra_info("socket")
        try:
            await sendfile(sock.fileno(), file, offset, count, idle=self.send_idle)
        except PeerStalled:
            if self.on_stall is not None:
                self.on_stall()
            self._gone()
        except PeerGone:
            self._gone()

    def _gone(self) -> None:
        """What uvicorn does when the client is gone mid-response: stop, quietly; the
        app's next ``receive()`` says ``http.disconnect`` and its sends do nothing."""
        self.disconnected = True
        self.message_event.set()
        self.transport.close()


def _fileno(file: Any) -> int:
    return file if isinstance(file, int) else int(file.fileno())


class ZeroCopyProtocol(HttpToolsProtocol):
    """Pass as ``uvicorn.Config(http=ZeroCopyProtocol)``; plain TCP only."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._zero_copy = transport.get_extra_info("sslcontext") is None and _has_fd(transport)
        if self._zero_copy:
            transport.set_write_buffer_limits(high=0)
        self._in_headers = True
        self._received = 0  # bytes read while the current request's headers are incomplete
        self._header_bytes = 0  # what httptools has handed over of them so far
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431
        if self._in_headers:
            self._received += len(data)
        super().data_received(data)
        # httptools keeps an unfinished header to itself: count what came in for it.
        if self._in_headers and self._received > MAX_HEADER_BYTES and not self._refused:
            self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refused = True  # uvicorn catches the parser error and calls send_400_response
            raise HeadersTooLarge

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            self._refused = False
            self._refuse_headers()
        else:
            super().send_400_response(msg)

    def _refuse_headers(self) -> None:
        self._refused = True
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's answer is still being written: a 431 would land in it.
            self.logger.warning("Request headers over %d bytes: closed.", MAX_HEADER_BYTES)
            self.transport.close()
            return
        self.logger.warning("Request headers over %d bytes: answered 431.", MAX_HEADER_BYTES)
        error = RegistryError(
            ErrorCode.HEADERS_TOO_LARGE,
            f"request line and headers over the limit of {MAX_HEADER_BYTES} bytes",
        )
        write_error(self.transport, error, self.server_state.default_headers)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then EOF
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._received = 0
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and type(cycle) is RequestResponseCycle:
            cycle.__class__ = ZeroCopyCycle  # only send() differs; no new state
            extensions = self.scope.setdefault("extensions", {})
            extensions[ABORT] = {}
            if self._zero_copy:
                extensions[ZEROCOPY] = {}

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle.body) is bytearray and not cycle.body:  # uvicorn's, fresh after receive()
            cycle.body = _Pieces()  # type: ignore[assignment]
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers = True


def write_error(
    transport: asyncio.Transport,
    error: RegistryError,
    default_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An answer written below the app (no request cycle to answer through): the OCI
    error envelope, ``connection: close``. The caller closes the connection."""
    body = json.dumps(error.envelope()).encode()
    reason = http.HTTPStatus(error.status).phrase.encode()
    head = [b"HTTP/1.1 %d %s\r\n" % (error.status, reason)]
    own = [(name.encode(), value.encode()) for name, value in error.headers.items()]
    fields = [*(default_headers or ()), *own]
    head += [name + b": " + value + b"\r\n" for name, value in fields]
    head.append(
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % len(body)
    )
    transport.write(b"".join(head) + body)


def _has_fd(transport: asyncio.Transport) -> bool:
    sock = transport.get_extra_info("socket")
    try:
        return sock is not None and os.fstat(sock.fileno()) is not None
    except (OSError, AttributeError):
        return False
