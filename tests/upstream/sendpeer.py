"""A loopback HTTP/1.1 peer for the lean path's upload bodies (``lean/sending.py``):
``Peer`` runs a test's script on each connection, parsed with ``h11``; a client on a
``LeanTransport`` of its own sends a streamed ``PATCH`` marked ``SEND`` to an upload
session's path (``SESSION_PATH``, which no error may quote)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import h11
import httpx
import trustme

from proxy.upstream.lean import SEND, LeanTransport, lean_ssl_context

PIECE = 64 * 1024
# An upload session's path is its credential: no error of the lean path may quote it.
SESSION_PATH = "/artifacts-uploads/namespaces/p/repositories/r/uploads/opaque-secret"
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


async def next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event of a request, reading as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(PIECE))


async def read_body(conn: h11.Connection, reader: asyncio.StreamReader, upto: int) -> int:
    """Body bytes read, up to the end of the body or at least ``upto`` bytes."""
    got = 0
    while got < upto:
        event = await next_event(conn, reader)
        if not isinstance(event, h11.Data):
            return got  # its end
        got += len(event.data)
    return got


def answer(conn: h11.Connection, status: int, body: bytes, **headers: str) -> bytes:
    fields = [("Content-Length", str(len(body))), *headers.items()]
    head = conn.send(h11.Response(status_code=status, headers=fields))
    return head + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")


def client(
    ca: trustme.CA,
    *,
    timeout: float = 10.0,
    write: float = 10.0,
    pool: float = 10.0,
    slots: int = 4,
    lean: bool = True,
) -> httpx.AsyncClient:
    """A client trusting ``ca``: on a ``LeanTransport``, or (``lean=False``) on httpx's
    own transport, for the same fault through both."""
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    inner = httpx.AsyncHTTPTransport(verify=trusting)
    transport: httpx.AsyncBaseTransport = inner
    if lean:
        transport = LeanTransport(inner, lean_ssl_context(trusting), slots)
    limits = httpx.Timeout(timeout, write=write, pool=pool)
    return httpx.AsyncClient(transport=transport, timeout=limits)


def lean(http: httpx.AsyncClient) -> LeanTransport:
    transport = http._transport
    assert isinstance(transport, LeanTransport)
    return transport


async def send(
    http: httpx.AsyncClient, url: str, body: AsyncIterator[bytes], length: int | None = None
) -> httpx.Response:
    """A streamed ``PATCH`` marked ``SEND``: chunked, or under ``length``."""
    headers = {"Content-Length": str(length)} if length is not None else {}
    request = http.build_request("PATCH", f"{url}{SESSION_PATH}", content=body, headers=headers)
    request.extensions[SEND] = True
    return await http.send(request)


async def pieces(count: int, size: int = PIECE, *, turns: bool = True) -> AsyncIterator[bytes]:
    """``turns``: a turn of the loop between pieces, as a client's arrive; else they come
    at once, as fast as they are sent."""
    piece = b"x" * size
    for _ in range(count):
        yield piece
        if turns:
            await asyncio.sleep(0)


async def serve_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every request on the connection answered with a body: a PATCH's after all of its
    body (202 ``accepted:<n>``), a GET's (200 ``blob``)."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = await next_event(conn, reader)
        if isinstance(event, h11.ConnectionClosed):
            return
        assert isinstance(event, h11.Request)
        got = await read_body(conn, reader, 1 << 62)
        if event.method == b"GET":
            writer.write(answer(conn, 200, b"blob"))
        else:
            writer.write(answer(conn, 202, b"accepted:%d" % got, Location="/next"))
        conn.start_next_cycle()


def reset(writer: asyncio.StreamWriter) -> None:
    linger = struct.pack("ii", 1, 0)  # close with RST
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    writer.transport.abort()
