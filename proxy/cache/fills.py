"""Single-flight fills: one upstream download per digest, any number of readers.

A ``Fill`` is owned by the app, not by the request that started it: it runs as its
own task, writing upstream bytes to a temp file and hashing them, and lives on if
that first client goes away (bounded by ``fill_timeout``). Readers follow the file
as it grows (``Fill.segments``), so the twentieth client of a cold blob gets bytes as
soon as the first does, and upstream sees one GET.

Nothing is trusted until the digest matches: a follower never receives the last
byte of a blob before verification, so a client can never complete a download of
bad content; on a mismatch or an upstream fault every follower's response is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from proxy.cache.bodies import Segment
from proxy.cache.fillwriter import BatchWriter, depth_for
from proxy.oci.digest import Digest, DigestVerifier
from proxy.oci.errors import ErrorCode, RegistryError

log = logging.getLogger("gar_proxy.cache")

CHUNK = 1024 * 1024  # bytes per batch handed to the writer (at least)
# Per follower read, when bytes rather than file segments are sent: dozens of streams
# run at once, each holding about one read in flight; 256 KiB rather than 1 MiB took
# the peak RSS of 8 concurrent cold pulls from about 115 to 86 MiB at the same CPU
# per byte (bench/RESULTS.md).
FOLLOW_READ_SIZE = 256 * 1024


class Source(Protocol):
    """An upstream body (``proxy.upstream.registry.BlobStream``): its size when known,
    its bytes, ``aclose``. Its failures are already ``RegistryError``s."""

    size: int | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


Opener = Callable[[], Awaitable[Source]]
Committer = Callable[[Path, Digest, int], Awaitable[None]]
# Asked once upstream said how large a blob is: False when it cannot be cached (disk).
Room = Callable[[Digest, int], Awaitable[bool]]
# How long an uncached upstream body waits for the request that started its fill.
HAND_OFF_WAIT = 5.0


async def always_room(digest: Digest, size: int) -> bool:
    return True


class Fill:
    def __init__(self, digest: Digest, temp: Path, final: Path) -> None:
        self.digest = digest
        self.temp = temp
        self.final = final  # where commit moves the temp file
        self.size: int | None = None  # from upstream Content-Length, once known
        self.written = 0
        self.error: RegistryError | None = None
        self.done = False
        self.headers_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # No room on disk: upstream's body goes to one client uncached (``take``).
        self.uncached = False
        self._spill: Source | None = None
        self._taken = asyncio.Event()
        self.disk_full = False  # ENOSPC while writing: the next request passes through
        self.origin: str | None = None  # the repository whose request started it

    @property
    def failed(self) -> bool:
        return self.error is not None

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def take(self) -> Source | None:
        """The uncached upstream body, for the first caller only (None after)."""
        source, self._spill = self._spill, None
        self._taken.set()
        return source

    async def _hand_off(self, source: Source) -> None:
        self._spill = source
        self.headers_ready.set_result(None)
        try:
            async with asyncio.timeout(HAND_OFF_WAIT):
                await self._taken.wait()
        except TimeoutError:
            pass
        finally:
            if self._spill is not None:  # the client went before taking it
                self._spill = None
                await source.aclose()

    async def run(
        self, opener: Opener, commit: Committer, limit: float, room: Room = always_room
    ) -> None:
        try:
            async with asyncio.timeout(limit):
                source = await self._download(opener, room)
            if source is not None:
                self.uncached = True
                self.error = RegistryError(ErrorCode.CACHE_FULL, f"no room to cache {self.digest}")
                await self._hand_off(source)
                return
            await commit(self.temp, self.digest, self.written)
            self.done = True
        except RegistryError as error:
            log.warning("fill of %s failed: %s", self.digest, error.message)
            self._fail(error)
        except TimeoutError:
            log.warning("fill of %s ran over cache.fill_timeout (%gs)", self.digest, limit)
            self._fail(
                RegistryError(
                    ErrorCode.UPSTREAM_TIMEOUT,
                    f"upstream fetch of {self.digest} took over {limit:g}s (cache.fill_timeout)",
                )
            )
        except asyncio.CancelledError:
            self._fail(RegistryError(ErrorCode.UPSTREAM_UNAVAILABLE, "gar-proxy is stopping"))
            raise
        except Exception as error:  # a bug, or the disk: never leave followers waiting
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                log.warning("cache disk full while filling %s: not cached", self.digest)
                self.disk_full = True
                self._fail(RegistryError(ErrorCode.CACHE_FULL, f"disk full filling {self.digest}"))
                return
            log.exception("fill of %s failed", self.digest)
            self._fail(RegistryError(ErrorCode.UNKNOWN, f"fill of {self.digest} failed: {error}"))
        finally:
            self._notify()

    def _fail(self, error: RegistryError) -> None:
        self.error = error
        with contextlib.suppress(OSError):
            self.temp.unlink(missing_ok=True)
        if not self.headers_ready.done():
            self.headers_ready.set_exception(error)
            self.headers_ready.exception()  # retrieved: every follower may be gone already

    async def _download(self, opener: Opener, room: Room) -> Source | None:
        """Upstream's body into the temp file; or, when it has no room, the body unread."""
        source = await opener()
        try:
            if source.size is not None and not await room(self.digest, source.size):
                return source
        except BaseException:
            await source.aclose()
            raise
        try:
            self.size = source.size
            verifier = self.digest.verifier()
            with self.temp.open("wb") as file:
                self.headers_ready.set_result(None)
                await self._store(source, file, verifier)
        finally:
            await source.aclose()
        if self.size is not None and self.written != self.size:
            raise RegistryError(
                ErrorCode.UPSTREAM_BAD_GATEWAY,
                f"upstream sent {self.written} of {self.size} bytes of {self.digest}",
            )
        if not verifier.matches():
            log.error("upstream sent wrong bytes for %s (got %s)", self.digest, verifier.actual())
            raise RegistryError(
                ErrorCode.UPSTREAM_CORRUPT,
                f"upstream content does not match {self.digest}; not cached",
            )
        return None

    async def _store(self, source: Source, file: BinaryIO, verifier: DigestVerifier) -> None:
        """Upstream's pieces, in batches of at least ``CHUNK`` bytes (lists of the pieces
        as received: no joining copy), to the file and the hash (``BatchWriter``).
        ``written`` counts only bytes already in the file, and grows as each batch is
        in (followers of a slow upstream do not wait for the next batch to fill)."""
        writer = BatchWriter(file, verifier, self._landed, _recycling(source), depth_for(self.size))
        batch: list[bytes] = []
        batched = 0
        first = True  # the first piece goes at once: followers' first bytes
        try:
            async for piece in source:
                batch.append(piece)
                batched += len(piece)
                if batched >= CHUNK or first:
                    await writer.put(batch, batched)
                    batch, batched, first = [], 0, False
            if batch:
                await writer.put(batch, batched)
            await writer.close()
        except BaseException:
            # Cancelled or failed: never let the file close under a thread still on it.
            await writer.abandon()
            raise

    def _landed(self, size: int) -> None:
        """A batch is in the file: followers may read it."""
        self.written += size
        self._notify()

    async def started(self) -> None:
        """Until upstream answered with headers; raises the fill's error if it did not."""
        await asyncio.shield(self.headers_ready)

    async def segments(
        self, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[Segment, None]:
        """``[start, end)`` of the temp file as it grows, as (fd, offset, count).

        Each segment is everything readable at the time; raises if the fill fails.
        """
        await self.started()
        fd = self._open()
        try:
            position = start
            while True:
                stop = self._readable_until(end)
                if position < stop:
                    yield fd, position, stop - position
                    position = stop
                    continue
                if self.failed:
                    raise self.error  # type: ignore[misc]
                if self.done and position >= stop:
                    return
                await self._progress.wait()
        finally:
            os.close(fd)

    def _open(self) -> int:
        try:
            return os.open(self.temp, os.O_RDONLY)
        except FileNotFoundError:
            if self.failed:
                raise self.error from None  # type: ignore[misc]
            return os.open(self.final, os.O_RDONLY)

    def _readable_until(self, end: int | None) -> int:
        if self.done:
            return self.written if end is None else min(end, self.written)
        limit = self.written
        if self.size is not None and limit >= self.size:
            limit = self.size - 1  # the last byte waits for the digest check
        return limit if end is None else min(end, limit)

    async def wait(self) -> None:
        """Until the fill ends; raises its error if it failed."""
        while not self.done:
            if self.failed:
                raise self.error  # type: ignore[misc]
            await self._progress.wait()


def _recycling(source: Source) -> Callable[[list[bytes]], None]:
    """Once a batch is written and hashed, its pieces go back to a source that reuses
    its buffers (``BlobStream.recycle``; optional, so any other source works as is)."""
    recycle = getattr(source, "recycle", None)

    def done(batch: list[bytes]) -> None:
        if recycle is not None:
            for piece in batch:
                recycle(piece)

    return done
