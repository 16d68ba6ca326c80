"""Request bodies through ``ZeroCopyProtocol``: its ``_Pieces`` keeps what httptools
hands over and joins it once, in ``receive()``. Whatever the framing (Content-Length,
many small chunks, pipelined requests, an empty body), the app must get exactly the
bytes sent, as ``bytes``, in order, and each request only its own."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

import pytest

from proxy.http import server as zero_copy
from testkit.servers import serve_in_thread


async def _digest_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers each request with ``size sha256 kinds`` of the body it received."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    digest, size, kinds = hashlib.sha256(), 0, set()
    while True:
        message = await receive()
        body = message.get("body", b"")
        kinds.add(type(body).__name__)
        digest.update(body)
        size += len(body)
        if not message.get("more_body"):
            break
    answer = f"{size} {digest.hexdigest()} {','.join(sorted(kinds))}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def _answers(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    answers: list[bytes] = []
    while len(answers) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {answers}"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            answers.append(rest[:length])
            data = rest[length:]
    return answers


def _expected(body: bytes) -> bytes:
    kinds = "bytes"
    return f"{len(body)} {hashlib.sha256(body).hexdigest()} {kinds}".encode()


def _chunked(body: bytes, size: int) -> bytes:
    pieces = [body[at : at + size] for at in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@pytest.fixture
def url() -> Any:
    with serve_in_thread(_digest_app, http=zero_copy.ZeroCopyProtocol) as url:
        yield url


def _connect(url: str) -> socket.socket:
    host, port = url.rsplit("//", 1)[1].split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_bodies_arrive_whole_in_every_framing_on_one_connection(url: str) -> None:
    big = os.urandom(3 * 1024 * 1024 + 7)
    small = os.urandom(1000)
    requests = [
        (b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big), big, big),
        # many tiny chunks: several on_body calls per read, joined by receive()
        (
            b"PATCH /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            _chunked(big, 997),
            big,
        ),
        (b"PUT /c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"", b""),
        (b"PUT /d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(small), small, small),
    ]
    with _connect(url) as sock:
        for head, wire, body in requests:
            sock.sendall(head + wire)
            assert _answers(sock, 1) == [_expected(body)]


def test_pipelined_requests_each_get_only_their_own_body(url: str) -> None:
    bodies = [os.urandom(n) for n in (70_000, 5, 200_000, 1)]
    wire = b"".join(
        b"PUT /%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s"
        % (i, _chunked(b, 4093))
        for i, b in enumerate(bodies)
    )
    with _connect(url) as sock:
        sock.sendall(wire)  # one write: uvicorn queues the requests after the first
        assert _answers(sock, len(bodies)) == [_expected(b) for b in bodies]


def test_pieces_hand_a_lone_piece_on_uncopied_and_join_several_once() -> None:
    one = zero_copy._Pieces()
    piece = os.urandom(100)
    one += piece
    assert bytes(one) is piece and len(one) == 100
    several = zero_copy._Pieces()
    for part in (b"ab", b"", b"cde"):
        several += part
    assert bytes(several) == b"abcde" and len(several) == 5
    assert bytes(zero_copy._Pieces()) == b""
