"""The shared blob tier (``cache.shared``): verified blobs in a Cloud Storage bucket that
every replica reads before GAR and writes after GAR.

Blob ``sha256:<hex>`` is the object ``PREFIX/sha256/<hex>``. A local miss opens the
object (``open``); its bytes go into the normal single-flight fill, which hashes them
as they land, so a wrong or short object is never admitted. The blob service answers
from such a fill only once it is verified, so when the bucket's copy is bad
(``rejected``) the same requests are answered from GAR instead, and the digest is not
read from the bucket again until a good copy has been written over it. A blob that came
from GAR is written to the bucket in the background once its fill is committed
(``upload_after``): from the cache file, streamed, a few at a time; a failure is
logged and counted, never seen by a client. Failures to reach the bucket are a miss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from proxy.cache.fills import Fill, Source
from proxy.cache.store import BlobStore
from proxy.config.values import SharedBucket
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError

log = logging.getLogger("gar_proxy.shared")

UPLOADS_AT_ONCE = 4  # each streams one cache file; more would crowd GAR's connections
MAX_PENDING = 1000  # uploads waiting beyond this many are dropped (counted as failed)
MAX_REJECTED = 10000  # digests whose bucket copy failed, remembered until rewritten
EVENTS = ("hit", "miss", "error", "corrupt", "uploaded", "upload_failed")


class Bucket(Protocol):
    """``proxy.upstream.storage.StorageBucket``: objects by name."""

    async def open(self, name: str) -> Source | None: ...

    async def upload(self, name: str, path: Path) -> None: ...


class SharedTier:
    def __init__(
        self,
        bucket: Bucket,
        where: SharedBucket,
        store: BlobStore,
        count: Callable[[str], None] = lambda event: None,
    ) -> None:
        self.bucket = bucket
        self.where = where
        self.store = store
        self.count = count  # one of EVENTS each time (the app's metrics)
        self._rejected: set[Digest] = set()
        self._slots = asyncio.Semaphore(UPLOADS_AT_ONCE)
        self._pending: set[asyncio.Task[None]] = set()

    def name(self, digest: Digest) -> str:
        return self.where.object_name(digest.algorithm, digest.hex)

    async def open(self, digest: Digest) -> Source | None:
        """The bucket's copy of ``digest`` as it arrives; None when it is not there, was
        found bad before, or the bucket cannot be reached (then GAR serves)."""
        if digest in self._rejected:
            return None
        try:
            source = await self.bucket.open(self.name(digest))
        except RegistryError as error:
            log.warning("shared tier %s: reading %s failed: %s", self.where, digest, error.message)
            self.count("error")
            return None
        self.count("hit" if source is not None else "miss")
        return source

    def rejected(self, digest: Digest, error: RegistryError) -> None:
        """A fill from the bucket failed (wrong bytes, short, cut): GAR serves it."""
        if digest in self._rejected:
            return
        if len(self._rejected) >= MAX_REJECTED:
            self._rejected.clear()
        self._rejected.add(digest)
        log.warning("shared tier %s: copy of %s not used: %s", self.where, digest, error.message)
        self.count("corrupt")

    def upload_after(self, fill: Fill) -> None:
        """Once ``fill`` (from GAR) is committed, write the blob to the bucket."""
        if len(self._pending) >= MAX_PENDING:
            log.warning("shared tier %s: %d uploads waiting; %s not written", self.where,
                        len(self._pending), fill.digest)  # fmt: skip
            self.count("upload_failed")
            return
        task = asyncio.get_running_loop().create_task(self._upload(fill))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _upload(self, fill: Fill) -> None:
        try:
            await fill.wait()
        except RegistryError:
            return  # not cached: nothing to share
        digest = fill.digest
        async with self._slots:
            try:
                await self.bucket.upload(self.name(digest), self.store.path(digest))
            except FileNotFoundError:
                log.info("shared tier %s: %s was evicted before it was written", self.where, digest)
                self.count("upload_failed")
                return
            except (RegistryError, OSError) as error:
                reason = error.message if isinstance(error, RegistryError) else str(error)
                log.warning("shared tier %s: writing %s failed: %s", self.where, digest, reason)
                self.count("upload_failed")
                return
            except Exception:  # a bug must not end as an unretrieved task exception
                log.exception("shared tier %s: writing %s failed", self.where, digest)
                self.count("upload_failed")
                return
        self._rejected.discard(digest)  # a good copy replaced whatever was there
        self.count("uploaded")

    async def drain(self, seconds: float) -> None:
        """Until the uploads scheduled so far are done, up to ``seconds``."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=seconds)

    async def aclose(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
