"""Streamed upload bodies on the lean path (``proxy/upstream/lean/sending.py``) against
upstreams that fail, on loopback, plain and TLS: a reset right after the head, a body
taken and never answered, the connection ended (a TLS close_notify, a FIN, a 408 then
the end) while the client trickles, and the request's task cancelled mid-body. Each
leaves no pooled connection, a free slot, no upload path in its error and nothing for
the loop to report. The peer: ``tests/upstream/sendpeer.py``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
from collections.abc import AsyncIterator

import h11
import httpx
import pytest
import trustme

from proxy.oci.errors import ErrorCode
from proxy.upstream import errors
from proxy.upstream.registry_uploads import SESSION
from tests.upstream.sendpeer import (
    PIECE,
    Peer,
    answer,
    client,
    lean,
    next_event,
    pieces,
    read_body,
    reset,
    send,
    serve_all,
)  # fmt: skip


def test_a_reset_right_after_the_head_fails_and_frees_the_slot(
    tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    """The only slot (``max_connections=1``) is free again: the next body goes."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if peer.connections == 1:
            conn = h11.Connection(h11.SERVER)
            assert isinstance(await next_event(conn, reader), h11.Request)
            reset(writer)
        else:
            await serve_all(reader, writer)

    peer = Peer(script)

    async def go() -> tuple[httpx.HTTPError, httpx.Response]:
        url = await peer.start(tls)
        async with client(ca, slots=1, pool=2.0) as http:
            with pytest.raises(httpx.TransportError) as caught:
                await send(http, url, pieces(400))
            again = await send(http, url, pieces(2))
        await peer.stop()
        return caught.value, again

    error, again = asyncio.run(go())
    mapped = errors.from_transport(error, SESSION)
    assert mapped.code is ErrorCode.UPSTREAM_BAD_GATEWAY
    assert "opaque-secret" not in f"{error!s} {error!r}"
    assert again.content == b"accepted:%d" % (2 * PIECE)


def test_an_upstream_that_takes_the_body_and_never_answers_is_a_read_timeout(
    tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await next_event(conn, reader), h11.Request)
        await read_body(conn, reader, 1 << 62)
        await reader.read()  # silent until the client leaves

    async def go() -> tuple[httpx.HTTPError, int]:
        peer = Peer(script)
        url = await peer.start(tls)
        async with client(ca, timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout) as caught:
                await send(http, url, pieces(8))
            idle = lean(http).idle_count()
        await peer.stop()
        return caught.value, idle

    error, idle = asyncio.run(go())
    assert idle == 0
    mapped = errors.from_transport(error, SESSION)
    assert mapped.code is ErrorCode.UPSTREAM_TIMEOUT
    assert "ReadTimeout after 0.3 s" in mapped.message
    assert "opaque-secret" not in f"{error!s} {error!r}"


@pytest.mark.parametrize("goodbye", ["close_notify", "idle-timeout-408"])
def test_an_upstream_that_ends_the_connection_while_the_client_trickles(
    goodbye: str, tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    """The client's next piece is slow; the upstream gives up first (a TLS close_notify
    or a FIN; or a 408 then the end). No answer: a ``WriteError``; a 408: the response."""
    ended = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await next_event(conn, reader), h11.Request)
        await read_body(conn, reader, 2 * PIECE)
        if goodbye != "close_notify":
            writer.write(answer(conn, 408, b"too slow"))
        writer.close()  # over TLS: close_notify, then the FIN
        await writer.wait_closed()
        ended.set()

    async def trickle() -> AsyncIterator[bytes]:
        yield b"x" * PIECE
        yield b"x" * PIECE
        await ended.wait()
        for _ in range(4):
            yield b"x" * PIECE

    async def go() -> httpx.Response | httpx.HTTPError:
        peer = Peer(script)
        url = await peer.start(tls)
        async with client(ca) as http:
            try:
                result: httpx.Response | httpx.HTTPError = await send(http, url, trickle())
            except httpx.HTTPError as error:
                result = error
            assert lean(http).idle_count() == 0
        await peer.stop()
        return result

    result = asyncio.run(go())
    if goodbye == "close_notify":
        assert isinstance(result, httpx.WriteError), repr(result)
        assert "opaque-secret" not in f"{result!s} {result!r}"
    else:
        assert isinstance(result, httpx.Response), repr(result)
        assert (result.status_code, result.content) == (408, b"too slow")


@pytest.mark.parametrize(
    "where", ["waiting-for-a-piece", "writing-paused", "waiting-for-the-answer"]
)
def test_a_request_cancelled_mid_body_drops_its_connection_quietly(
    where: str, tls: ssl.SSLContext | None, ca: trustme.CA
) -> None:
    """The client went away: the request's task is cancelled while it waits for the
    client's next piece, for the upstream to read, or for the answer. The connection is
    dropped (the upstream sees its end, never a complete body), the only slot is free
    for the next body, and the loop reports nothing."""
    reached, cut = asyncio.Event(), asyncio.Event()
    complete: list[bool] = []  # each body the upstream saw: whole or not
    dropped = asyncio.Event()  # the upstream saw the connection end

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if peer.connections > 1:
            return await serve_all(reader, writer)
        conn = h11.Connection(h11.SERVER)
        assert isinstance(await next_event(conn, reader), h11.Request)
        answer = where == "waiting-for-the-answer"
        upto = {"waiting-for-a-piece": 8 * 256 * 1024, "writing-paused": PIECE}
        got = await read_body(conn, reader, upto.get(where, 1 << 62))
        reached.set()
        if where == "writing-paused":
            await cut.wait()  # reads no more until the client is gone
        if not answer:
            with contextlib.suppress(h11.RemoteProtocolError, ConnectionError):  # cut
                await read_body(conn, reader, 1 << 62)
        complete.append(conn.their_state is h11.DONE)
        with contextlib.suppress(ConnectionError):
            while await reader.read(PIECE):
                pass
        dropped.set()
        assert got

    peer = Peer(script)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(1 << 12 if where == "writing-paused" else 8):
            yield b"x" * (256 * 1024)
        if where != "waiting-for-the-answer":
            await asyncio.Event().wait()  # the client's next piece never comes

    async def go() -> tuple[list[dict[str, object]], int, httpx.Response]:
        noise: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: noise.append(context))
        url = await peer.start(tls)
        async with client(ca, slots=1, pool=2.0) as http:
            task = asyncio.create_task(send(http, url, body()))
            await reached.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cut.set()
            idle = lean(http).idle_count()
            await dropped.wait()
            again = await send(http, url, pieces(2))
        await peer.stop()
        gc.collect()
        await asyncio.sleep(0)
        return noise, idle, again

    noise, idle, again = asyncio.run(go())
    assert noise == [] and idle == 0
    # Cut mid-body, the upstream never saw it whole; waiting for the answer, it had.
    assert complete == [where == "waiting-for-the-answer"]
    assert again.content == b"accepted:%d" % (2 * PIECE)
