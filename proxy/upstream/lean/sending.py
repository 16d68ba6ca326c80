"""Streamed request bodies on a lean connection: an upload's ``PATCH`` or ``PUT``.

The head is written by ``h11``; each piece of the body goes straight to the event
loop's transport as h11 frames it (``send_with_data_passthrough``: a chunk header and
the caller's own bytes, never a copy of them; or the bytes alone under a
Content-Length). When the transport holds ``wire.WRITE_HIGH`` bytes unsent it pauses
the wire's writing, and the next piece waits for it to resume (or for the upstream's
final answer: one that answers early may read no more), at most the request's write
timeout (``httpx.WriteTimeout``). httpcore paid a cancel scope, a
``fail_after``, ``sniffio`` and ``current_task`` per piece for the same.

As httpcore does, an upstream that closes the connection before the body ends (it
answered early: a 401, a 413) does not fail the request: the sender stops, and the
answer it sent is read and returned like any other; only when it sent none is that a
``WriteError``. What the upstream sends while the body goes is parsed by ``h11`` as it
comes: an interim ``1xx`` (a ``100 Continue`` nobody asked for) is passed over and the
body goes on; only a final answer stops it.

A body that raises (the client left, a digest check refused the last byte) drops the
connection, so the upstream never sees a complete body, and its exception goes on
unchanged.
"""

from __future__ import annotations

import asyncio

import h11
import httpx

from proxy.upstream.lean.wire import Wire


async def send(wire: Wire, conn: h11.Connection, request: httpx.Request) -> h11.Response | None:
    """Write ``request`` and its streamed body to ``wire``, up to the end of the body
    (None: its answer is read next) or the upstream's final answer, if that came first
    (returned: its body is read next), or the end of the connection."""
    early = await _write(wire, conn, request)
    if early is False and not conn.trailing_data[0]:
        raise httpx.WriteError(
            "upstream closed the connection before the request body ended", request=request
        )
    return early if isinstance(early, h11.Response) else None


async def _write(
    wire: Wire, conn: h11.Connection, request: httpx.Request
) -> h11.Response | bool | None:
    """None: all of it was sent; the final answer that came first; False: the upstream
    ended the connection first."""
    seconds = request.extensions.get("timeout", {}).get("write")
    assert isinstance(request.stream, httpx.AsyncByteStream)  # an AsyncClient's request
    head = h11.Request(method=request.method, target=request.url.raw_path,
                       headers=request.headers.raw)  # fmt: skip
    wire.start_sending()
    try:
        wire.write(conn.send(head) or b"")
        async for piece in request.stream:
            if (early := await _answered(wire, conn)) is not None:
                return early
            if not piece:
                continue
            wire.send(conn.send_with_data_passthrough(h11.Data(data=piece)) or [])
            if wire.write_paused and (early := await _paused(wire, conn, request, seconds)):
                return early
        if (early := await _answered(wire, conn)) is not None:
            return early
        wire.write(conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError as error:  # the body's length is not the one announced
        wire.abort()
        raise httpx.LocalProtocolError(str(error), request=request) from None
    except BaseException:
        wire.abort()  # a body cut short never reaches the upstream complete
        raise
    return None


async def _paused(
    wire: Wire, conn: h11.Connection, request: httpx.Request, seconds: float | None
) -> h11.Response | None:
    """Until the transport takes more bytes (None) or the upstream's final answer came
    (it may answer early and read no more: waiting on its reading would never end);
    ``WriteTimeout`` after ``seconds`` with neither. Interim answers wait on."""
    clock = asyncio.get_running_loop().time
    deadline = None if seconds is None else clock() + seconds
    while wire.write_paused and not wire.ended:
        if not await wire.writable(None if deadline is None else deadline - clock()):
            raise httpx.WriteTimeout("timed out writing to upstream", request=request)
        early = await _answered(wire, conn)
        if isinstance(early, h11.Response):
            return early
    return None


async def _answered(wire: Wire, conn: h11.Connection) -> h11.Response | bool | None:
    """The upstream's final answer, if its head is in; False if it ended the connection
    (send no more); None: go on. Whatever its socket holds unread is taken in first: a
    write to a connection the upstream has reset makes the loop drop it unread, its
    answer too (httpcore loses such an answer that way). Two turns of the loop: in the
    first its callback for the socket is queued behind this task, in the second it has
    run. Interim answers (``100 Continue``) are passed over, as ``_head`` would."""
    if wire.unread():
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    if wire.pending:
        conn.receive_data(wire.drain())
        event = conn.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = conn.next_event()
        if isinstance(event, h11.Response):
            return event
    return False if wire.ended else None
