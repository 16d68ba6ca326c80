"""Streamed upload bodies on the lean path (``proxy/upstream/lean/sending.py``) against a
loopback HTTP/1.1 server, plain and over TLS: bytes as sent (chunked or under a
Content-Length), an early answer returned as the answer, a reset or a stalled reader an
httpx error that ``errors.from_transport`` maps as it maps httpx's own (each fault is
also run through httpx's transport, lean off, for the same result), connections reused
after a complete exchange and never when the pooled one may be stale."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx
import pytest
import trustme
import uvloop

from proxy.oci.errors import ErrorCode
from proxy.upstream import errors
from proxy.upstream.lean import LeanTransport
from testkit.images import make_layer
from tests.upstream.sendpeer import PIECE, answer, client, reset, send

DENIED = b'{"errors":[{"code":"DENIED"}]}'
Runner = Callable[[Awaitable[Any]], Any]


@dataclass
class Exchange:
    """One request as the server read it."""

    connection: int
    method: str
    headers: dict[bytes, bytes]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False


class Server:
    """An HTTP/1.1 server on loopback that does ``behaviour`` with each request:
    ``ok`` (read it all, answer 202 and keep the connection), ``early`` (answer
    ``status`` once ``after`` body bytes arrived, then close), ``reset`` (close with a
    reset once ``after`` bytes arrived), ``stall`` (stop reading after the head)."""

    def __init__(self, behaviour: str, *, status: int = 202, after: int = 100_000) -> None:
        self.behaviour, self.status, self.after = behaviour, status, after
        self.exchanges: list[Exchange] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.acted = asyncio.Event()  # the early answer, the reset or the stall happened
        self.release = asyncio.Event()  # a stalled handler may end
        self.ended = asyncio.Event()  # a connection's handler returned
        self.server: asyncio.AbstractServer | None = None

    async def start(self, context: ssl.SSLContext | None) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release.set()
        for writer in self.writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except ConnectionError:
            pass
        finally:
            self.ended.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.writers)
        self.writers.append(writer)
        conn = h11.Connection(h11.SERVER)
        seen: Exchange | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(PIECE)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                seen = Exchange(number, event.method.decode(), dict(event.headers))
                self.exchanges.append(seen)
                if self.behaviour == "stall":
                    self.acted.set()
                    await self.release.wait()
                    return
            elif isinstance(event, h11.Data) and seen is not None:
                seen.body += event.data
                if len(seen.body) >= self.after and self.behaviour in ("early", "reset"):
                    await self._act(conn, writer)
                    return
            elif isinstance(event, h11.EndOfMessage) and seen is not None:
                seen.complete = True
                writer.write(answer(conn, 202, b"", Location="/next"))
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return

    async def _act(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        if self.behaviour == "early":
            writer.write(answer(conn, self.status, DENIED, Location="/next"))
            await writer.drain()
            writer.close()
        else:
            reset(writer)
        self.acted.set()


async def _pieces(data: bytes, size: int = PIECE) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _held_back(server: Server, first: int, then: int) -> AsyncIterator[bytes]:
    """``first`` pieces, then (once the server did what it does) ``then`` more."""
    piece = b"x" * PIECE
    for _ in range(first):
        yield piece
    await server.acted.wait()
    for _ in range(then):
        yield piece


def _idle(http: httpx.AsyncClient) -> int:
    transport = http._transport
    return transport.idle_count() if isinstance(transport, LeanTransport) else -1


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[return-value]


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_body_arrives_byte_exact_and_the_connection_is_reused(
    framing: str, tls: ssl.SSLContext | None, ca: trustme.CA, run: Runner
) -> None:
    first = make_layer(size=3 * 1024 * 1024 + 12345, seed=1)
    second = make_layer(size=777_777, seed=2)

    async def go() -> Server:
        server = Server("ok")
        url = await server.start(tls)
        async with client(ca) as http:
            for data, size in ((first, 100_003), (second, 170_000)):
                length = len(data) if framing == "content-length" else None
                response = await send(http, url, _pieces(data, size), length)
                assert response.status_code == 202
                assert response.headers["location"] == "/next"
                assert _idle(http) == 1
        await server.stop()
        return server

    server = run(go())
    assert [bytes(e.body) for e in server.exchanges] == [first, second]
    assert all(e.complete for e in server.exchanges)
    assert [e.connection for e in server.exchanges] == [0, 0]  # reused after a whole exchange
    framed = [e.headers.get(b"transfer-encoding") for e in server.exchanges]
    if framing == "chunked":
        assert framed == [b"chunked", b"chunked"]
    else:
        assert framed == [None, None]
        assert server.exchanges[0].headers[b"content-length"] == str(len(first)).encode()


@pytest.mark.parametrize("status", [401, 413])
def test_an_early_answer_mid_body_is_the_response(
    status: int, tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    """The upstream answers and resets the connection (its unread body bytes) while the
    next piece is on its way. httpcore loses that answer (its write meets the reset,
    the loop drops the socket unread: ``ReadError``); the lean path reads what the
    socket holds before each piece, so the answer is returned."""

    async def go() -> tuple[int, bytes, Server, int]:
        server = Server("early", status=status, after=3 * PIECE)
        url = await server.start(tls)
        async with client(ca) as http:
            response = await send(http, url, _held_back(server, 4, 64))
            idle = _idle(http)
        await server.stop()
        return response.status_code, response.content, server, idle

    code, body, server, idle = asyncio.run(go())
    assert (code, body) == (status, b'{"errors":[{"code":"DENIED"}]}')
    assert not server.exchanges[0].complete
    assert idle == 0  # a connection whose request was cut is never pooled


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx"])
def test_a_reset_mid_body_is_an_httpx_error_mapped_as_before(
    lean: bool, tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    async def go() -> httpx.HTTPError:
        server = Server("reset", after=3 * PIECE)
        url = await server.start(tls)
        async with client(ca, lean=lean) as http:
            with pytest.raises(httpx.TransportError) as caught:
                await send(http, url, _held_back(server, 4, 64))
            assert _idle(http) in (0, -1)
        await server.stop()
        return caught.value

    error = asyncio.run(go())
    mapped = errors.from_transport(error, "https://upstream/session?secret=1")
    assert mapped.code is ErrorCode.UPSTREAM_BAD_GATEWAY
    assert "secret" not in str(mapped.message)


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx"])
def test_an_upstream_that_stops_reading_is_a_write_timeout(
    lean: bool, tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    async def flood() -> AsyncIterator[bytes]:
        piece = b"y" * (1024 * 1024)
        for _ in range(256):  # far beyond what the kernels' buffers and ours hold
            yield piece

    async def go() -> httpx.HTTPError:
        server = Server("stall")
        url = await server.start(tls)
        async with client(ca, lean=lean, write=0.2) as http:
            with pytest.raises(httpx.WriteTimeout) as caught:
                await send(http, url, flood())
            assert _idle(http) in (0, -1)
        await server.stop()
        return caught.value

    error = asyncio.run(go())
    mapped = errors.from_transport(error, "https://upstream/session")
    assert mapped.code is ErrorCode.UPSTREAM_TIMEOUT
    assert "WriteTimeout after 0.2 s" in str(mapped.message)


def test_a_stale_pooled_connection_is_not_used_for_a_body(
    tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    """The upstream ends a pooled connection and the loop has not seen it yet (no
    callback ran since): the body goes on a fresh connection, never into the dead one."""
    data = make_layer(size=500_000, seed=3)

    async def go() -> Server:
        server = Server("ok")
        url = await server.start(tls)
        async with client(ca) as http:
            assert (await send(http, url, _pieces(b"first"))).status_code == 202
            assert _idle(http) == 1
            server.writers[0].get_extra_info("socket").shutdown(socket.SHUT_WR)  # a FIN, now
            assert (await send(http, url, _pieces(data))).status_code == 202
        await server.stop()
        return server

    server = asyncio.run(go())
    assert [e.connection for e in server.exchanges] == [0, 1]
    assert bytes(server.exchanges[1].body) == data


def test_a_body_that_fails_drops_the_connection_and_its_error_goes_on(ca: trustme.CA) -> None:
    """The client left mid-body (or the digest check refused the last byte): the
    upstream never sees a complete body, and the body's own exception is raised."""

    class Gone(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"z" * PIECE
        raise Gone

    async def go() -> tuple[Server, int]:
        server = Server("ok")
        url = await server.start(None)
        async with client(ca) as http:
            with pytest.raises(Gone):
                await send(http, url, failing())
            idle = _idle(http)
            await server.ended.wait()
        await server.stop()
        return server, idle

    server, idle = asyncio.run(go())
    assert idle == 0 and not server.exchanges[0].complete
