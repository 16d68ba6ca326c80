"""The lean path holds a bounded number of bytes a server sends that nobody reads yet:
on an idle pooled connection (none: it is dropped), and of a chunked body whose reader
is slow (reading pauses); blob bodies in flight at once are capped by the pool size
(transport.max_connections); idle connections are capped across origins and expire;
its TLS checks the server's name."""

from __future__ import annotations

import asyncio
import socket

import httpx

from proxy.clock import ManualClock
from proxy.upstream import sockets
from proxy.upstream.lean import BODY, LEAN, LeanTransport, lean_ssl_context

FLOOD = 32 * 1024 * 1024
BOUND = 4 * 1024 * 1024


async def _serve(
    answer: bytes, flood: bool, delay: float = 0.0
) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        if flood:
            await writer.drain()
            await asyncio.sleep(delay)  # the client has pooled the connection by then
            chunk = b"x" * (1024 * 1024)
            for _ in range(FLOOD // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _client() -> tuple[httpx.AsyncClient, LeanTransport]:
    transport = LeanTransport(httpx.AsyncHTTPTransport(), lean_ssl_context(True))
    return httpx.AsyncClient(transport=transport, timeout=10.0), transport


def test_bytes_sent_to_an_idle_kept_alive_connection_are_bounded() -> None:
    async def main() -> int:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        server, port = await _serve(head, flood=True, delay=0.3)
        http, transport = _client()
        request = http.build_request("GET", f"http://127.0.0.1:{port}/b")
        request.extensions[LEAN] = True
        response = await http.send(request, stream=True)
        wire = response.extensions[BODY]._wire
        assert await response.aread() == b"hello"
        await asyncio.sleep(1.5)  # idle in the pool; the server keeps sending
        assert transport.idle_count(), "the connection was pooled"
        held = len(wire.pending)
        await http.aclose()
        server.close()
        return held

    held = asyncio.run(main())
    assert held < BOUND, f"an idle pooled connection buffered {held} unsolicited bytes"


def test_a_chunked_body_not_read_yet_is_not_buffered_whole() -> None:
    async def main() -> int:
        size = FLOOD
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % size
        server, port = await _serve(head, flood=True)
        http, _ = _client()
        request = http.build_request("GET", f"http://127.0.0.1:{port}/b")
        request.extensions[LEAN] = True
        response = await http.send(request, stream=True)
        wire = response.extensions[BODY]._wire
        await asyncio.sleep(1.0)  # a slow consumer (disk, hash): nothing read yet
        held = len(wire.pending)
        await response.aclose()
        await http.aclose()
        server.close()
        return held

    held = asyncio.run(main())
    assert held < BOUND, f"{held} bytes of a chunked body held in Wire.pending (no pause)"


def test_concurrent_lean_gets_respect_the_pool_limit() -> None:
    """transport.max_connections bounds blob bodies in flight as httpx's pool bounds the
    rest: eight GETs at once with a limit of two are answered two at a time."""

    async def main() -> int:
        in_flight = most = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal in_flight, most
            try:
                while True:  # keep-alive: one answer per request on this connection
                    await reader.readuntil(b"\r\n\r\n")
                    in_flight += 1
                    most = max(most, in_flight)
                    await asyncio.sleep(0.1)
                    in_flight -= 1
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = LeanTransport(
            httpx.AsyncHTTPTransport(), lean_ssl_context(True), max_connections=2
        )
        http = httpx.AsyncClient(transport=transport, timeout=10.0)

        async def one() -> bytes:
            request = http.build_request("GET", f"http://127.0.0.1:{port}/b")
            request.extensions[LEAN] = True
            response = await http.send(request, stream=True)
            return await response.aread()

        answers = await asyncio.gather(*(one() for _ in range(8)))
        assert answers == [b"ok"] * 8
        await http.aclose()
        server.close()
        return most

    assert asyncio.run(main()) == 2


def test_tls_hostname_is_checked() -> None:
    import ssl

    import pytest
    import trustme

    ca = trustme.CA()

    async def main() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("other.example").configure_cert(context)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(1)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        trust = ssl.create_default_context()
        ca.configure_trust(trust)
        http = httpx.AsyncClient(
            transport=LeanTransport(
                httpx.AsyncHTTPTransport(verify=trust), lean_ssl_context(trust)
            ),
            timeout=5.0,
        )
        request = http.build_request("GET", f"https://127.0.0.1:{port}/b")
        request.extensions[LEAN] = True
        with pytest.raises(httpx.ConnectError):
            await http.send(request, stream=True)
        await http.aclose()
        server.close()

    asyncio.run(main())


class _KeptAlive:
    """A server answering every request on a connection with ``ok``; it counts the
    connections it accepted and those the client closed."""

    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.changed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1
            self.changed.set()
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/b"


async def _lean_get(http: httpx.AsyncClient, url: str) -> bytes:
    request = http.build_request("GET", url)
    request.extensions[LEAN] = True
    response = await http.send(request, stream=True)
    return await response.aread()


def test_the_idle_pool_is_capped_across_origins_and_expires_on_the_clock() -> None:
    """At most ``max_idle`` idle connections over all origins (the oldest is closed
    for a newcomer), none kept past ``idle_expiry`` of the injected clock, and each
    with TCP keep-alive on (a NAT that forgets an idle flow must not hang a pull)."""

    async def main() -> None:
        servers = [_KeptAlive() for _ in range(3)]
        urls = [await server.start() for server in servers]
        clock = ManualClock()
        transport = LeanTransport(
            httpx.AsyncHTTPTransport(), lean_ssl_context(True), max_idle=2, clock=clock
        )
        http = httpx.AsyncClient(transport=transport, timeout=10.0)
        for url in urls:
            assert await _lean_get(http, url) == b"ok"
            clock.advance(1)
        assert transport.idle_count() == 2
        await asyncio.wait_for(servers[0].changed.wait(), 10)  # the oldest, closed
        assert [s.closed for s in servers] == [1, 0, 0]

        clock.advance(80)  # the newest has been idle 81 s: within the 90 s expiry
        assert await _lean_get(http, urls[2]) == b"ok"
        assert servers[2].accepted == 1  # reused
        wire = transport._idle[-1].wire
        assert wire.transport is not None
        sock = wire.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == sockets.IDLE

        clock.advance(91)  # past the expiry: closed, a fresh connection instead
        assert await _lean_get(http, urls[2]) == b"ok"
        assert servers[2].accepted == 2
        await asyncio.wait_for(servers[2].changed.wait(), 10)
        assert servers[2].closed == 1
        assert servers[1].closed == 1  # expired too, closed when the pool was next used
        await http.aclose()
        for server in servers:
            server.server.close()

    asyncio.run(main())
