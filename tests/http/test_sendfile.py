"""``proxy.http.sendfile`` moves exact bytes through a socket that fills up, on both
event loops the proxy runs on, and says clearly when the peer or the file goes away."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from proxy.http import sendfile as sendfile_module
from proxy.http.sendfile import PeerGone, sendfile

LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


def _pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair with small buffers, so a send fills them many times over."""
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sender.setblocking(False)
    return sender, receiver


def _reader(
    receiver: socket.socket, out: bytearray, stop_after: int | None = None
) -> threading.Thread:
    def run() -> None:
        while stop_after is None or len(out) < stop_after:
            data = receiver.recv(7000)  # smaller than a send: the sender waits on the socket
            if not data:
                break
            out.extend(data)
        receiver.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(11).randbytes(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("cached", [True, False], ids=["page-cache-hit", "miss"])
def test_sends_exactly_the_range_through_a_full_socket(
    blob: tuple[Path, bytes], loop: str, cached: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sendfile_module, "in_page_cache", lambda fd, offset: cached)
    path, data = blob
    sender, receiver = _pair()
    received = bytearray()
    reader = _reader(receiver, received)
    offset, count = 123, len(data) - 1000

    async def send() -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            return await sendfile(sender.fileno(), fd, offset, count)
        finally:
            os.close(fd)

    try:
        assert LOOPS[loop](send()) == count
    finally:
        sender.close()
    reader.join(10)
    assert bytes(received) == data[offset : offset + count]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_peer_that_leaves_is_peer_gone(blob: tuple[Path, bytes], loop: str) -> None:
    path, _ = blob
    sender, receiver = _pair()
    received = bytearray()
    reader = _reader(receiver, received, stop_after=100_000)

    async def send() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            await sendfile(sender.fileno(), fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    try:
        with pytest.raises(PeerGone):
            LOOPS[loop](send())
    finally:
        sender.close()
    reader.join(10)
    assert 100_000 <= len(received) < path.stat().st_size


def test_a_file_shorter_than_asked_is_an_error(blob: tuple[Path, bytes]) -> None:
    path, data = blob
    sender, receiver = _pair()
    received = bytearray()
    reader = _reader(receiver, received)

    async def send() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            await sendfile(sender.fileno(), fd, 0, len(data) + 10)
        finally:
            os.close(fd)

    try:
        with pytest.raises(OSError, match="10 bytes early"):
            asyncio.run(send())
    finally:
        sender.close()
    reader.join(10)
    assert bytes(received) == data
