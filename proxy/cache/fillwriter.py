"""A fill's batches into its temp file and its hash, on two in-order stages.

Each stage (write, hash) takes the batches one after another on the default
executor, and neither waits for the other: a write that stalls on the disk does not
stop the hash, and a hash that falls behind does not hold back followers, who may
read a batch as soon as it is in the file (the last byte of the blob still waits for
the digest: ``Fill.segments``). Hashing and writing release the GIL, so on a second
core they overlap each other and the event loop's reading of the next batch::

    writer = BatchWriter(file, verifier, on_written=count, on_done=recycle)
    await writer.put(pieces, size)     # waits while DEPTH batches are in flight
    await writer.close()               # everything written and hashed, or the error

Bytes go to the file ``WRITE_SLICE`` at a time: the page cache sizes its folios by
the write, and in this VM large writes cost several times the CPU (``WRITE_SLICE``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import BinaryIO

from proxy.oci.digest import DigestVerifier

# Batches between the reader and the end of both stages: the reader's lead, and the
# memory a fill holds (a lean batch is 2 or 4 MiB). Two for a large blob; one below
# DEEP_FROM: 8 concurrent cold pulls of a 256 MiB image (five fills at once) peaked at
# 88 MiB of RSS with two against 82 MiB with one (bench scenario 3).
DEPTH = 2
DEEP_FROM = 256 * 1024 * 1024


def depth_for(size: int | None) -> int:
    """How many batches a fill of ``size`` bytes may have in flight.

    >>> depth_for(1024**3), depth_for(96 * 1024**2), depth_for(None)
    (2, 1, 1)
    """
    return DEPTH if size is not None and size >= DEEP_FROM else 1


# Bytes per write(2) into the temp file. A 1 GiB fill written 4 MiB at a time cost
# 1.7-2.4 s of system CPU here (54% of its samples in copy_folio_from_iter_atomic),
# 32 KiB at a time 0.9-1.3 s; 1 GiB of plain writes: 1.9-2.1 s at >= 1 MiB per write,
# 0.3-0.4 s at 32 KiB (bench/RESULTS.md, issue 24). The page cache sizes folios by the
# write, and large ones seem to come from memory the host faults back in on first touch.
WRITE_SLICE = 32 * 1024

Batch = list[bytes]


class BatchWriter:
    def __init__(
        self,
        file: BinaryIO,
        verifier: DigestVerifier,
        on_written: Callable[[int], None],
        on_done: Callable[[Batch], None] = lambda batch: None,
        depth: int = DEPTH,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._file, self._verifier = file, verifier
        self._on_written, self._on_done, self._depth = on_written, on_done, depth
        done = self._loop.create_future()
        done.set_result(None)
        self._stored: asyncio.Future[None] = done  # the write stage's last job
        self._hashed: asyncio.Future[None] = done  # the hash stage's last job
        self._flight: collections.deque[asyncio.Future[None]] = collections.deque()
        self._stopping = False  # abandoned: queued jobs are skipped, not run

    async def put(self, batch: Batch, size: int) -> None:
        """Queue ``batch`` on both stages; waits while ``depth`` batches are in flight.
        Raises the first failure of either stage."""
        while self._flight and (len(self._flight) >= self._depth or self._flight[0].done()):
            oldest = self._flight[0]
            await asyncio.shield(oldest)  # a cancelled fill still lets it finish
            self._flight.popleft()
        stored = self._after(self._stored, _store_batch, self._file, batch)
        hashed = self._after(self._hashed, _hash, self._verifier, batch)
        self._stored, self._hashed = stored, hashed
        stored.add_done_callback(lambda job: self._landed(job, size))
        both = asyncio.ensure_future(_both(stored, hashed))
        both.add_done_callback(lambda _: self._on_done(batch))
        self._flight.append(both)

    def _after(
        self, previous: asyncio.Future[None], work: Callable[..., None], *args: object
    ) -> asyncio.Future[None]:
        """``work(*args)`` on the executor once ``previous`` (the same stage's last job)
        is done; not at all if it failed (the stage stops at its first failure)."""

        async def job() -> None:
            await asyncio.wait([previous])
            previous.result()
            if not self._stopping:
                await self._loop.run_in_executor(None, work, *args)

        return asyncio.ensure_future(job())

    def _landed(self, job: asyncio.Future[None], size: int) -> None:
        if not job.cancelled() and job.exception() is None and not self._stopping:
            self._on_written(size)

    async def close(self) -> None:
        """Until every batch is written and hashed; the first failure, if any."""
        while self._flight:
            await asyncio.shield(self._flight[0])
            self._flight.popleft()

    async def abandon(self) -> None:
        """Stop: jobs not started are skipped; waits for those running (the file must
        not close under a thread still writing it). Never raises."""
        self._stopping = True
        pending = [job for job in (self._stored, self._hashed, *self._flight) if not job.done()]
        if pending:
            await asyncio.wait(pending)
        for job in (self._stored, self._hashed, *self._flight):
            if not job.cancelled():
                job.exception()  # retrieved; the fill's own error is on its way
        self._flight.clear()


async def _both(stored: asyncio.Future[None], hashed: asyncio.Future[None]) -> None:
    """Both stages' work on one batch, done; the first failure raised once neither runs."""
    await asyncio.wait([stored, hashed])
    for part in (stored, hashed):
        part.result()


def _hash(verifier: DigestVerifier, pieces: Batch) -> None:
    for piece in pieces:
        verifier.update(piece)


def _store_batch(file: BinaryIO, pieces: Batch) -> None:
    for piece in pieces:
        view = memoryview(piece)
        file.writelines([view[at : at + WRITE_SLICE] for at in range(0, len(view), WRITE_SLICE)])
    file.flush()  # followers pread the file: nothing counted may sit in a buffer
