"""``sendfile(2)`` from a file to a non-blocking socket, on the event loop.

uvloop has no ``loop.sendfile``, so this is the loop-agnostic version: send what the
socket buffer takes, wait until it is writable, repeat. Page-cached ranges are sent
inline (one kernel copy, no Python per byte); a range not in the page cache would
block on the disk, so that call goes to a thread. The socket stays owned by its
transport, so bytes go to a ``dup`` of it, taken before the first await: the loop
may close the transport's descriptor while we wait (the client reset the
connection), and its number can then be reused at once by another connection.
Readiness is awaited on the same ``dup``, as loops refuse a reader or writer on a
transport's own descriptor.
"""

from __future__ import annotations

import asyncio
import errno
import os

from proxy.cache.pagecache import in_page_cache

STEP = 8 * 1024 * 1024  # bytes asked per call; the socket buffer takes what it can
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)


class PeerGone(ConnectionError):
    """The client closed its end while bytes were being sent."""


class PeerStalled(PeerGone):
    """The client took no byte for the ``idle`` seconds ``sendfile`` was given."""


async def sendfile(
    sock: int, file: int, offset: int, count: int, *, idle: float | None = None
) -> int:
    """Send ``count`` bytes of ``file`` from ``offset``; returns the bytes sent.

    Raises ``PeerGone`` when the client went away, or took no byte for ``idle``
    seconds (a client that stops reading holds a connection for ever otherwise);
    ``OSError`` when the file ends before ``count`` bytes (it shrank under us).
    """
    loop = asyncio.get_running_loop()
    target = os.dup(sock)  # ours until we close it, whatever the transport does
    sent_total = 0
    try:
        while sent_total < count:
            step = min(STEP, count - sent_total)
            position = offset + sent_total
            try:
                if in_page_cache(file, position + step - 1):
                    sent = os.sendfile(target, file, position, step)
                else:
                    sent = await _in_thread(loop, target, file, position, step)
            except BlockingIOError:
                await _writable(loop, target, idle)
                continue
            except OSError as error:
                if error.errno in _GONE:
                    raise PeerGone(error.errno, os.strerror(error.errno)) from None
                raise
            if sent == 0:
                raise OSError(f"file ended {count - sent_total} bytes early")
            sent_total += sent
        return sent_total
    finally:
        os.close(target)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, idle: float | None) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await asyncio.wait_for(ready, idle)
    except TimeoutError:
        raise PeerStalled(errno.ETIMEDOUT, f"the client took no byte for {idle:g} s") from None
    finally:
        loop.remove_writer(fd)


async def _in_thread(
    loop: asyncio.AbstractEventLoop, sock: int, file: int, offset: int, count: int
) -> int:
    call = loop.run_in_executor(None, os.sendfile, sock, file, offset, count)
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        # The caller closes these descriptors next: not while the thread still uses them.
        await asyncio.wait([call])
        raise
