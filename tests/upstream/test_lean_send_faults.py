"""Streamed upload bodies on the lean path (``proxy/upstream/lean/sending.py``) against
upstreams that answer in unusual ways, on loopback, plain and TLS: interim ``100
Continue`` answers mid-body, an early answer from a server that then reads no more and
keeps the connection open, a 202 with a body on a kept-alive connection reused by a GET
and another body, close-delimited, ``Connection: close`` and chunked answers, an early
answer followed by a half-close. The peer: ``tests/upstream/sendpeer.py``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import httpx
import pytest
import trustme
import uvloop

from proxy.upstream.lean import LEAN
from tests.upstream.sendpeer import (
    PIECE,
    Peer,
    answer,
    client,
    lean,
    next_event,
    pieces,
    read_body,
    send,
    serve_all,
)  # fmt: skip

Runner = Callable[[Awaitable[Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[return-value]


def test_interim_100_continue_answers_do_not_stop_the_body(
    tls: ssl.SSLContext | None, ca: trustme.CA, run: Runner
) -> None:
    """A server may send ``100 Continue`` unasked (RFC 9110 15.2: a client must parse
    1xx answers it did not expect), here at once after the head and again mid-body;
    only the final answer, after the whole body, is the response."""
    total = 40 * PIECE
    seen: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await next_event(conn, reader), h11.Request)
        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        got = await read_body(conn, reader, total // 2)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # h11 sends one 100 only
        got += await read_body(conn, reader, total)
        seen.append(got)
        writer.write(answer(conn, 202, b"accepted"))
        await writer.drain()

    async def go() -> httpx.Response:
        peer = Peer(script)
        url = await peer.start(tls)
        try:  # stopped even on a failure: uvloop's runner waits for its connections
            async with client(ca, timeout=5.0) as http:
                return await send(http, url, pieces(total // PIECE))
        finally:
            await peer.stop()

    response = run(go())
    assert (response.status_code, response.content) == (202, b"accepted")
    assert seen == [total]


def test_an_answer_while_writing_is_paused_is_the_response(
    tls: ssl.SSLContext | None, ca: trustme.CA, run: Runner
) -> None:
    """The upstream answers 413 early, keeps the connection open and reads no more: our
    writing stays paused (its buffers and ours are full). The answer, not a
    ``WriteTimeout``, is the response."""
    stop = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await next_event(conn, reader), h11.Request)
        await read_body(conn, reader, PIECE)
        writer.write(answer(conn, 413, b'{"errors":[{"code":"SIZE_INVALID"}]}'))
        await stop.wait()  # reads nothing more, closes nothing

    async def go() -> tuple[httpx.Response | BaseException, int]:
        peer = Peer(script)
        url = await peer.start(tls)
        async with client(ca, write=5.0) as http:
            try:
                response: httpx.Response | BaseException = await send(
                    http, url, pieces(512, 1024 * 1024, turns=False)
                )
            except httpx.HTTPError as error:
                response = error
            idle = lean(http).idle_count()
        stop.set()
        await peer.stop()
        return response, idle

    response, idle = run(go())
    assert isinstance(response, httpx.Response), repr(response)
    assert (response.status_code, response.content) == (
        413,
        b'{"errors":[{"code":"SIZE_INVALID"}]}',
    )
    assert idle == 0


def test_a_202_with_a_body_keeps_the_connection_for_a_get_and_another_body(
    tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    async def go() -> tuple[list[bytes], int, int]:
        peer = Peer(serve_all)
        url = await peer.start(tls)
        async with client(ca) as http:
            first = await send(http, url, pieces(20))
            get = http.build_request("GET", f"{url}/blob", extensions={LEAN: True})
            second = await http.send(get)
            third = await send(http, url, pieces(3))
            idle = lean(http).idle_count()
        await peer.stop()
        return [first.content, second.content, third.content], peer.connections, idle

    bodies, connections, idle = asyncio.run(go())
    assert bodies == [b"accepted:%d" % (20 * PIECE), b"blob", b"accepted:%d" % (3 * PIECE)]
    assert (connections, idle) == (1, 1)


@pytest.mark.parametrize(
    ("answer", "pooled"),
    [
        (b"HTTP/1.0 202 Accepted\r\n\r\naccepted", False),  # ends with the connection
        (b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 8\r\n\r\naccepted", False),
        (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3\r\nacc\r\n5\r\nepted\r\n0\r\n\r\n", True),
    ],
    ids=["http-1.0", "connection-close", "chunked"],
)  # fmt: skip
def test_closing_and_chunked_answers_are_read_whole(
    answer: bytes, pooled: bool, tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await next_event(conn, reader), h11.Request)
        await read_body(conn, reader, 1 << 62)
        writer.write(answer)
        await writer.drain()
        if not pooled:
            writer.close()

    async def go() -> tuple[httpx.Response, int]:
        peer = Peer(script)
        url = await peer.start(tls)
        async with client(ca) as http:
            response = await send(http, url, pieces(10))
            idle = lean(http).idle_count()
        await peer.stop()
        return response, idle

    response, idle = asyncio.run(go())
    assert (response.status_code, response.content) == (202, b"accepted")
    assert idle == (1 if pooled else 0)


def test_an_early_answer_then_a_half_close_is_the_response(ca: trustme.CA) -> None:
    """The upstream answers 401 mid-body, shuts its writing side and reads on."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await next_event(conn, reader), h11.Request)
        await read_body(conn, reader, 4 * PIECE)
        writer.write(answer(conn, 401, b"denied"))
        writer.write_eof()
        while await reader.read(PIECE):
            pass

    async def go() -> tuple[httpx.Response, int]:
        peer = Peer(script)
        url = await peer.start(None)
        async with client(ca) as http:
            response = await send(http, url, pieces(400))
            idle = lean(http).idle_count()
        await peer.stop()
        return response, idle

    response, idle = asyncio.run(go())
    assert (response.status_code, response.content, idle) == (401, b"denied", 0)
