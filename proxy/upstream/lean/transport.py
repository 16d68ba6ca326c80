"""``LeanTransport``: blob GETs and streamed upload bodies on lean HTTP/1.1 connections
of its own, every other request through the inner httpx transport (the package
docstring maps the whole path).

Failures are httpx's exceptions, so ``errors.from_transport`` translates them as
before. A connection is reused only after a complete exchange; a reused one the server
had closed is replaced once for a GET, as httpcore does. A streamed body cannot be
sent twice, so it goes only on an idle connection that shows no sign of its end (no
EOF or byte seen by the loop, nothing readable on the socket), else on a fresh one.
Idle connections are kept per origin (at most ``IDLE_PER_ORIGIN``) and across origins
(at most ``max_idle``, oldest closed first), each for at most ``idle_expiry`` seconds
of the injected clock.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import h11
import httpx

from proxy.clock import SYSTEM, Clock
from proxy.upstream import sockets
from proxy.upstream.lean import sending
from proxy.upstream.lean.bodies import DirectBody, ParsedBody
from proxy.upstream.lean.wire import Wire

LEAN = "gar_proxy.lean_body"  # request extension: this GET may take the lean path
SEND = "gar_proxy.lean_send"  # request extension: this streamed body may take the lean path
BODY = "gar_proxy.direct_body"  # response extension: its ``DirectBody``, if it has one
IDLE_PER_ORIGIN = 4
# Across origins (GAR's regional hosts, storage): httpx's max_keepalive_connections.
MAX_IDLE = 20
IDLE_EXPIRY = 90.0  # transport.keepalive_expiry, as httpx's pool keeps its own
Origin = tuple[str, str, int]


@dataclass
class _Idle:
    origin: Origin
    wire: Wire
    since: float  # the clock's monotonic reading when it was pooled


class _Stale(Exception):
    """A reused connection closed before any answer: try a fresh one."""


def _protocol_error(error: h11.ProtocolError, request: httpx.Request) -> httpx.HTTPError:
    if isinstance(error, h11.LocalProtocolError):
        return httpx.LocalProtocolError(str(error), request=request)
    return httpx.RemoteProtocolError(str(error), request=request)


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        ssl_context: ssl.SSLContext,
        max_connections: int | None = None,
        *,
        max_idle: int = MAX_IDLE,
        idle_expiry: float = IDLE_EXPIRY,
        clock: Clock = SYSTEM,
    ) -> None:
        self._inner = inner
        self._ssl = ssl_context
        self._idle: list[_Idle] = []  # oldest first
        self._max_idle, self._expiry, self._clock = max_idle, idle_expiry, clock
        # Blob bodies in flight at once (transport.max_connections, as httpx's pool for
        # everything else): each may hold a few batches of memory.
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme in _PORTS:
            if request.extensions.get(LEAN) and request.method == "GET":
                return await self._lean(request)
            if request.extensions.get(SEND) and request.method in ("PATCH", "PUT", "POST"):
                return await self._lean(request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        wires = [idle.wire for idle in self._idle]
        self._idle.clear()
        for wire in wires:  # no TLS goodbye: nobody waits for the peer's on shutdown
            wire.abort()
        if wires:
            await asyncio.wait([asyncio.ensure_future(w.gone.wait()) for w in wires], timeout=2)
        await self._inner.aclose()

    async def _lean(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or _PORTS[url.scheme])
        timeouts = request.extensions.get("timeout", {})
        release = await self._acquire(request, timeouts.get("pool"))
        try:
            wire, response = await self._answer(origin, request, timeouts)
        except BaseException:
            release()
            raise
        wire.hold(release)  # given back when the wire is pooled again or closed
        return response

    async def _acquire(self, request: httpx.Request, seconds: float | None) -> Callable[[], None]:
        slots = self._slots
        if slots is None:
            return _nothing
        try:
            async with asyncio.timeout(seconds):
                await slots.acquire()
        except TimeoutError:
            message = "no upstream connection free for a blob body"
            raise httpx.PoolTimeout(message, request=request) from None
        return slots.release

    async def _answer(
        self, origin: Origin, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> tuple[Wire, httpx.Response]:
        streamed = request.method != "GET"  # its body cannot be sent again
        wire = self._checkout(origin, quiet=streamed)
        if wire is not None:
            try:
                return wire, await self._exchange(
                    wire, origin, request, timeouts, reused=not streamed
                )
            except _Stale:
                wire.close()
        wire = await self._connect(origin, request, timeouts.get("connect"))
        try:
            return wire, await self._exchange(wire, origin, request, timeouts, reused=False)
        except _Stale:
            wire.close()
            raise httpx.RemoteProtocolError(
                "upstream closed the connection without an answer", request=request
            ) from None

    def _checkout(self, origin: Origin, *, quiet: bool = False) -> Wire | None:
        """The most recently pooled live connection to ``origin``, if any (``quiet``:
        only one whose socket has nothing to read either, not even an EOF)."""
        self._expire()
        for place in range(len(self._idle) - 1, -1, -1):
            idle = self._idle[place]
            if idle.origin != origin:
                continue
            del self._idle[place]
            wire = idle.wire
            # A body's connection has nothing unread either: the loop may not have seen
            # an EOF or a reset that is already there (httpcore asks the same).
            if not wire.closed and not wire.pending and not (quiet and wire.unread()):
                wire.idle = False
                return wire
            wire.close()
        return None

    def checkin(self, origin: Origin, wire: Wire) -> None:
        self._expire()
        same = sum(1 for idle in self._idle if idle.origin == origin)
        if wire.closed or wire.pending or same >= IDLE_PER_ORIGIN or self._max_idle <= 0:
            wire.close()
            return
        if len(self._idle) >= self._max_idle:
            self._idle.pop(0).wire.close()  # the one idle longest
        wire.idle = True
        wire.let_go()
        self._idle.append(_Idle(origin, wire, self._clock.monotonic()))

    def _expire(self) -> None:
        """Close connections idle longer than ``idle_expiry`` (the oldest come first)."""
        now = self._clock.monotonic()
        while self._idle and now - self._idle[0].since > self._expiry:
            self._idle.pop(0).wire.close()

    def idle_count(self) -> int:
        return len(self._idle)

    async def _connect(self, origin: Origin, request: httpx.Request, seconds: float | None) -> Wire:
        scheme, host, port = origin
        context = self._ssl if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                _, wire = await loop.create_connection(
                    Wire, host, port, ssl=context, server_hostname=host if context else None
                )
        except TimeoutError:
            message = f"connecting to {host}:{port} timed out"
            raise httpx.ConnectTimeout(message, request=request) from None
        except OSError as error:  # ssl.SSLError included: certificate refused, handshake
            raise httpx.ConnectError(str(error), request=request) from None
        sock = wire.transport.get_extra_info("socket") if wire.transport else None
        if sock is not None:
            sockets.keep_alive(sock)
        return wire

    async def _exchange(
        self,
        wire: Wire,
        origin: Origin,
        request: httpx.Request,
        timeouts: dict[str, float | None],
        *,
        reused: bool,
    ) -> httpx.Response:
        conn = h11.Connection(h11.CLIENT)
        streamed = request.method != "GET"
        try:
            early = None  # a streamed body's final answer, when it came before the end
            if streamed:  # written piece by piece as the body comes
                early = await sending.send(wire, conn, request)
            else:
                head = h11.Request(method="GET", target=request.url.raw_path,
                                   headers=request.headers.raw)  # fmt: skip
                wire.write(conn.send(head) + (conn.send(h11.EndOfMessage()) or b""))
            answer = early or await _head(wire, conn, request, timeouts.get("read"), reused)
        except h11.ProtocolError as error:
            wire.close()
            raise _protocol_error(error, request) from None
        except BaseException:
            wire.close()
            raise
        read = timeouts.get("read")
        length = _content_length(answer)
        checkin = functools.partial(self.checkin, origin)
        body: httpx.AsyncByteStream
        if answer.status_code == 200 and length and not streamed:
            keep = answer.http_version == b"1.1" and not _says_close(answer)
            body = DirectBody(checkin, wire, request, length, read, keep)
            wire.receive_body(length, conn.trailing_data[0])
        else:
            body = ParsedBody(checkin, wire, request, conn, read)
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": answer.reason, BODY: body}
        return httpx.Response(
            answer.status_code,
            headers=answer.headers.raw_items(),
            stream=body,
            extensions=extensions,
            request=request,
        )


_PORTS = {"http": 80, "https": 443}


def _nothing() -> None:
    pass


async def _head(
    wire: Wire, conn: h11.Connection, request: httpx.Request, seconds: float | None, reused: bool
) -> h11.Response:
    received = False
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            return event
        if event is not h11.NEED_DATA:  # an informational answer: the real one follows
            continue
        if wire.pending:
            received = True
            conn.receive_data(wire.drain())
        elif wire.closed:
            if reused and not received:
                raise _Stale()
            raise httpx.RemoteProtocolError(
                "upstream closed the connection without an answer", request=request
            )
        else:
            await wire.wait(seconds, request)


def _content_length(answer: h11.Response) -> int | None:
    for name, _ in answer.headers:
        if name == b"transfer-encoding":
            return None
    for name, value in answer.headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _says_close(answer: h11.Response) -> bool:
    return any(
        name == b"connection" and b"close" in value.lower() for name, value in answer.headers
    )


def lean_ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The lean path's own TLS context: the same trust, HTTP/1.1 only (httpx's may
    offer h2 in ALPN, which this client does not speak)."""
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
