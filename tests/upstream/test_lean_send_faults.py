"""Streamed upload bodies on the lean path (``proxy/upstream/lean/sending.py``) against
unusual or faulty upstreams on loopback, plain and TLS: interim ``100 Continue``
answers, an early answer from a server that stops reading without closing, an answer
that never comes, keep-alive reuse after a 202 with a body, close-delimited and chunked
answers, a TLS close_notify mid-body, and a request cancelled mid-body."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import h11
import httpx
import pytest
import trustme

from proxy.upstream.lean import SEND, LeanTransport, lean_ssl_context

PIECE = 64 * 1024
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A loopback server that runs ``script`` on each connection and records how many
    connections it saw."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self, context: ssl.SSLContext | None) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if context else 'http'}://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            await self.script(reader, writer)

    async def stop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()


async def _event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event of a request, reading as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(PIECE))


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader, upto: int) -> int:
    """Body bytes read, up to the end of the body or at least ``upto`` bytes."""
    got = 0
    while got < upto:
        event = await _event(conn, reader)
        if isinstance(event, h11.Data):
            got += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return got
    return got


def _answer(conn: h11.Connection, status: int, body: bytes, **headers: str) -> bytes:
    fields = [("Content-Length", str(len(body))), *headers.items()]
    head = conn.send(h11.Response(status_code=status, headers=fields))
    return head + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=["plain", "tls"])
def tls(request: pytest.FixtureRequest, ca: trustme.CA) -> ssl.SSLContext | None:
    if request.param == "plain":
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def _client(ca: trustme.CA, *, timeout: float = 10.0, write: float = 10.0) -> httpx.AsyncClient:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    transport = LeanTransport(
        httpx.AsyncHTTPTransport(verify=trusting), lean_ssl_context(trusting), 4
    )
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout, write=write))


def _lean(http: httpx.AsyncClient) -> LeanTransport:
    transport = http._transport
    assert isinstance(transport, LeanTransport)
    return transport


async def _send(http: httpx.AsyncClient, url: str, body: AsyncIterator[bytes]) -> httpx.Response:
    request = http.build_request("PATCH", f"{url}/upload", content=body)
    request.extensions[SEND] = True
    return await http.send(request)


async def _pieces(count: int, size: int = PIECE, *, turns: bool = True) -> AsyncIterator[bytes]:
    """``turns``: a turn of the loop between pieces, as a client's arrive; else they come
    at once, as fast as they are sent."""
    piece = b"x" * size
    for _ in range(count):
        yield piece
        if turns:
            await asyncio.sleep(0)


def test_interim_100_continue_answers_do_not_stop_the_body(
    tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    """A server may send ``100 Continue`` unasked (RFC 9110 15.2: a client must parse
    1xx answers it did not expect), here at once after the head and again mid-body;
    only the final answer, after the whole body, is the response."""
    total = 40 * PIECE
    seen: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await _event(conn, reader), h11.Request)
        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        got = await _read_body(conn, reader, total // 2)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # h11 sends one 100 only
        got += await _read_body(conn, reader, total)
        seen.append(got)
        writer.write(_answer(conn, 202, b"accepted"))
        await writer.drain()

    async def go() -> httpx.Response:
        peer = Peer(script)
        url = await peer.start(tls)
        async with _client(ca, timeout=5.0) as http:
            response = await _send(http, url, _pieces(total // PIECE))
        await peer.stop()
        return response

    response = asyncio.run(go())
    assert (response.status_code, response.content) == (202, b"accepted")
    assert seen == [total]


def test_an_answer_while_writing_is_paused_is_the_response(
    tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    """The upstream answers 413 early, keeps the connection open and reads no more: our
    writing stays paused (its buffers and ours are full). The answer, not a
    ``WriteTimeout``, is the response."""
    stop = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await _event(conn, reader), h11.Request)
        await _read_body(conn, reader, PIECE)
        writer.write(_answer(conn, 413, b'{"errors":[{"code":"SIZE_INVALID"}]}'))
        await stop.wait()  # reads nothing more, closes nothing

    async def go() -> tuple[httpx.Response | BaseException, int]:
        peer = Peer(script)
        url = await peer.start(tls)
        async with _client(ca, write=5.0) as http:
            try:
                response: httpx.Response | BaseException = await _send(
                    http, url, _pieces(512, 1024 * 1024, turns=False)
                )
            except httpx.HTTPError as error:
                response = error
            idle = _lean(http).idle_count()
        stop.set()
        await peer.stop()
        return response, idle

    response, idle = asyncio.run(go())
    assert isinstance(response, httpx.Response), repr(response)
    assert (response.status_code, response.content) == (
        413,
        b'{"errors":[{"code":"SIZE_INVALID"}]}',
    )
    assert idle == 0
