"""A body that is a file: zero-copy segments for the server, or bytes for anyone.

Cache hits and followers of a running fill hand the route a ``FileBody``. A server
that can send files (``proxy.http.server``) takes its ``segments()`` - (descriptor,
offset, count) triples, each valid until the next is asked for - and the kernel moves
the bytes; everything else (httpx upload bodies, other ASGI servers) iterates it as
``bytes``, read in large chunks, on the loop when page-cached::

    async for fd, offset, count in body.segments(): ...
    async for chunk in body: ...
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from proxy.cache.pagecache import in_page_cache

Segment = tuple[int, int, int]  # (file descriptor, offset, count)


class FileBody:
    """Single use: iterate it once, as segments or as bytes. What it holds (an open
    file, a reader count) is released by ``on_close`` when the iteration ends, on
    ``close()``, or when a body never iterated is garbage collected."""

    def __init__(
        self,
        segments: Callable[[], AsyncGenerator[Segment, None]],
        read_size: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._segments = segments
        self.read_size = read_size
        # finalize runs its callback at most once, whichever comes first.
        self._closer = weakref.finalize(self, on_close) if on_close is not None else None

    def close(self) -> None:
        if self._closer is not None:
            self._closer()

    async def segments(self) -> AsyncGenerator[Segment, None]:
        try:
            async with aclosing(self._segments()) as segments:
                async for segment in segments:
                    yield segment
        finally:
            self.close()

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self.chunks()

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The bytes, read in ``read_size`` pieces; ``aclose()`` releases the file."""
        loop = asyncio.get_running_loop()
        async with aclosing(self.segments()) as segments:
            async for fd, offset, count in segments:
                end = offset + count
                while offset < end:
                    size = min(self.read_size, end - offset)
                    if in_page_cache(fd, offset + size - 1):
                        chunk = os.pread(fd, size, offset)
                        await asyncio.sleep(0)  # the loop was not given up: let others run
                    else:
                        chunk = await loop.run_in_executor(None, os.pread, fd, size, offset)
                    if not chunk:
                        raise OSError(f"file ended {end - offset} bytes early")
                    offset += len(chunk)
                    yield chunk
