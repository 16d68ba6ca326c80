"""One HTTP/1.1 connection read with ``asyncio.BufferedProtocol``: a blob body lands in
the buffers it is handed out in.

The event loop (uvloop, and its TLS layer too) reads the socket straight into the
memory ``get_buffer`` returns. A body with a Content-Length is received into
preallocated ``bytearray`` batches (4 MiB, 2 MiB for bodies under 256 MiB), each handed over whole
once full: no Python-level copy of body bytes and one callback per socket read,
where httpcore, anyio and h11 made two or three copies and a cancel scope per 256 KiB.
Everything else (the response head, chunked or close-delimited bodies, error bodies)
is copied out of a small scratch buffer and parsed by ``h11``, as httpx itself does.

Reading pauses while ``READY_LIMIT`` full batches wait for the consumer, so a slow
disk or hash holds at most that many batches in memory. A request body
(``lean.sending``) is written with the transport's flow control: past ``WRITE_HIGH``
bytes not yet sent the transport pauses the wire's writing, and the sender waits for it
to resume.
"""

from __future__ import annotations

import asyncio
import collections
import select
from collections.abc import Callable

import httpx

BATCH = 4 * 1024 * 1024  # for a body of BIG_BODY bytes or more
SMALL_BATCH = 2 * 1024 * 1024  # for smaller ones
# Measured: a 1 GiB fill costs the loop 0.8-1.0 s of CPU in 4 MiB batches and 1.1-1.3 s
# in 2 MiB ones; but 8 concurrent cold pulls of a 256 MiB image peaked at 106 MiB of
# RSS with 4 MiB batches against 81 MiB with 2 MiB (79 before).
BIG_BODY = 256 * 1024 * 1024
# A body's first batch: its first bytes reach followers once this much is in, not a
# whole batch (2 MiB took 2-4 ms to arrive on loopback, and longer from a real upstream).
FIRST_BATCH = 128 * 1024
READY_LIMIT = 1  # full batches held before the socket is paused
FREE_LIMIT = 2  # spare batches kept for reuse while a body is received
SCRATCH = 64 * 1024
# Copied bytes not yet parsed (a head, a chunked or close-delimited body) held before
# reading pauses: those bodies wait on the disk and the hash like batches do.
PENDING_LIMIT = 256 * 1024
# Request body bytes the transport may hold unsent before the sender waits: a few of
# the client's pieces (~170 KiB each), so the socket always has the next one at hand.
WRITE_HIGH = 1024 * 1024
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class Wire(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._scratch = bytearray(SCRATCH)
        self._scratch_view = memoryview(self._scratch)
        self.pending = bytearray()  # copied bytes not yet parsed (head, slow bodies)
        self.closed = False  # EOF or connection lost
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None  # a sender waits to write more
        self.write_paused = False
        self._poller: select.poll | None = None  # asks the socket itself (``unread``)
        self.gone = asyncio.Event()  # connection_lost was called
        self._paused = False
        # In the idle pool: no request is due, so any byte the server sends is a fault.
        self.idle = False
        self._held: Callable[[], None] | None = None  # the transport's slot, while in use
        # The body being received into batches (``direct``), or None.
        self._remaining = 0
        self._batch: bytearray | None = None
        self._view: memoryview | None = None
        self._filled = 0
        self._start = 0  # the current batch's bytes before this were handed over early
        self.received = 0  # body bytes so far: progress, for the read timeout
        self.ready: collections.deque[memoryview] = collections.deque()
        # Batches given back once written and hashed: a fresh bytearray is zeroed
        # (and often faulted in) first, a third of what the socket reads cost.
        self._free: list[bytearray] = []
        self._size = BATCH  # of this body's batches
        self._first = False  # the next batch is the body's first

    # --- protocol callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._remaining:
            if self._view is None:
                self._start_batch()
            assert self._view is not None
            return self._view[self._filled :]
        # A memoryview, never the bytearray: asyncio's TLS layer reads the rest of a
        # record into ``buf[offset:]``, which for a bytearray is a copy, lost.
        return self._scratch_view

    def buffer_updated(self, nbytes: int) -> None:
        view = self._view
        if view is None:  # a head or a parsed body: copied, parsed by h11
            if self.idle:  # nothing was asked: never buffer what a server sends unasked
                self.abort()
                return
            self.pending += self._scratch_view[:nbytes]
            if len(self.pending) >= PENDING_LIMIT:
                self._pause()
            self._wake()
            self._wake_writer()  # a paused sender looks at an early answer
            return
        self._filled += nbytes
        self._remaining -= nbytes
        self.received += nbytes
        if self._filled == len(view):
            self.ready.append(view[self._start :] if self._start else view)
            self._batch = self._view = None
            if not self._remaining:
                self._free.clear()
            elif len(self.ready) >= READY_LIMIT:
                self._pause()
            self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        self._wake_writer()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.let_go()
        self.closed = True
        self.error = exc
        self.gone.set()
        self._wake()
        self._wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # --- direct bodies -----------------------------------------------------------------

    def receive_body(self, length: int, prefix: bytes) -> None:
        """From now on the next ``length`` bytes go to batches; ``prefix`` (read with
        the head) first. Bytes beyond ``length`` stay in ``pending``."""
        self._remaining = length
        self._size = BATCH if length >= BIG_BODY else SMALL_BATCH
        self._first = True
        view = memoryview(prefix)
        while view:
            room = self.get_buffer(-1)
            count = min(len(room), len(view))
            room[:count] = view[:count]
            self.buffer_updated(count)
            view = view[count:]

    def _start_batch(self) -> None:
        size = min(FIRST_BATCH if self._first else self._size, self._remaining)
        self._first = False
        self._batch = self._free.pop() if size == self._size and self._free else bytearray(size)
        self._view = memoryview(self._batch)
        self._filled = self._start = 0

    def recycle(self, piece: memoryview) -> None:
        """A whole batch the reader is done with, for the next one to reuse."""
        batch = piece.obj
        whole = isinstance(batch, bytearray) and len(piece) == len(batch) == self._size
        # Only while a body is due: an idle kept-alive connection holds no batches.
        if whole and self._remaining and len(self._free) < FREE_LIMIT:
            self._free.append(batch)  # type: ignore[arg-type]  # a bytearray, checked

    def drain(self) -> bytes:
        """The copied bytes not parsed yet, for h11; reading goes on once they are out."""
        data = bytes(self.pending)
        self.pending.clear()
        if self._paused and not self.ready:
            self._paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    def take_partial(self) -> memoryview | None:
        """What the current batch holds so far, not handed over yet: for a slow upstream,
        so followers see bytes before a whole batch arrived (the rest follows later)."""
        view = self._view
        if view is None or self._filled == self._start:
            return None
        piece = view[self._start : self._filled]
        self._start = self._filled
        return piece

    def take(self) -> memoryview | None:
        """The next full batch, if one is ready; lets reading go on."""
        if not self.ready:
            return None
        batch = self.ready.popleft()
        if self._paused and len(self.ready) < READY_LIMIT:
            self._paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return batch

    @property
    def remaining(self) -> int:
        return self._remaining

    # --- waiting ---------------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float | None, request: httpx.Request) -> None:
        """Until more arrives (or the connection ends); ``ReadTimeout`` after ``seconds``."""
        if not await self.wait_briefly(seconds):
            raise httpx.ReadTimeout("timed out reading from upstream", request=request)

    async def wait_briefly(self, seconds: float | None) -> bool:
        """Until woken (a batch is full, the head or a parsed body's bytes arrived, the
        connection ended): True; or ``seconds`` passed: False."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await _settled(self._waiter, seconds)
        finally:
            self._waiter = None

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    # --- sending a request body ------------------------------------------------------

    def start_sending(self) -> None:
        """A request body follows: let the transport hold ``WRITE_HIGH`` bytes unsent."""
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)

    def unread(self) -> bool:
        """The socket holds bytes, an EOF or an error the loop has not read yet (or
        the wire has no socket any more)."""
        if self._poller is None:
            sock = self.transport.get_extra_info("socket") if self.transport else None
            if sock is None or sock.fileno() < 0:
                return True
            self._poller = select.poll()
            self._poller.register(sock.fileno(), _READABLE)
        return bool(self._poller.poll(0))

    @property
    def ended(self) -> bool:
        """The peer closed (or the transport is going): nothing more can be sent."""
        return self.closed or self.transport is None or self.transport.is_closing()

    def send(self, parts: list[bytes]) -> None:
        """Framing and a body piece, as h11 gave them (uvloop writes the list with one
        ``writev`` and no copy; asyncio's stdlib transport joins it first)."""
        assert self.transport is not None
        if len(parts) == 1:
            self.transport.write(parts[0])
        elif parts:
            self.transport.writelines(parts)

    async def writable(self, seconds: float | None) -> bool:
        """Until the transport takes more bytes, the peer sent some or the connection
        ended: True; False once ``seconds`` passed with writing still paused (the peer
        stopped reading)."""
        if not self.write_paused or self.ended:
            return True
        self._writer = asyncio.get_running_loop().create_future()
        try:
            return await _settled(self._writer, seconds)
        finally:
            self._writer = None

    def _wake_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    def hold(self, release: Callable[[], None]) -> None:
        """Keep the transport's slot until the wire is pooled again or closed."""
        self._held = release
        if self.closed and not self.pending and not self.ready:
            self.let_go()  # already gone, nothing left to read: nothing to hold

    def let_go(self) -> None:
        release, self._held = self._held, None
        if release is not None:
            release()

    def close(self) -> None:
        self.let_go()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.let_go()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


async def _settled(future: asyncio.Future[None], seconds: float | None) -> bool:
    """True once ``future`` is set; False if ``seconds`` pass first."""
    try:
        async with asyncio.timeout(seconds):
            await future
        return True
    except TimeoutError:
        return False
