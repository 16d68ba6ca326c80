"""Blob uploads in flight: their rows in SQLite and the bytes spooled on the way in.

A push through the proxy reaches upstream as one write, whatever the client does (GAR
takes one per upload session: docs/GAR.md). For each upload the proxy keeps

- a row: its own id, the repository, the identity that opened it (its owner: no other
  identity may touch it), upstream's session URL (opaque: any path on the
  upstream's host) and what that session holds: ``OPEN`` (nothing: it can take the
  write), ``SPENT`` (a write began: it takes no other), or N > 0 (a write of N bytes
  completed: a ``PUT`` without a body commits it);
- a ``Spool``: every byte the client sent, in order, written once to
  ``CACHE/uploads/<id>`` with its running sha256. It is the client's offset (what a
  GET on the session reports), what a final write to a fresh upstream session replays,
  and what enters the cache once the blob is verified.

Hash state cannot be saved: after a restart the spool is hashed again from its file,
which is always a prefix of what the client sent (it is only appended to, or cut back
to a mark). The files live outside ``tmp/``, which start-up empties, so that they
survive a restart.

Spools keep the cache's floor of free space (``cache.min_free``, which fills keep too):
a write that would take the disk below it fails as on a full disk (ENOSPC), so a client
pushing chunks it never finishes cannot spool the disk empty under SQLite and the fills.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosqlite

from proxy.cache.store import BlobStore
from proxy.oci.digest import Digest
from proxy.oci.names import Repository

log = logging.getLogger("gar_proxy.uploads")

READ_SIZE = 1024 * 1024
# Sessions untouched this long are forgotten (with their bytes on disk).
UPLOAD_TTL = 24 * 3600.0
# Free space is probed again after at most this many bytes (or the room last seen).
PROBE_EVERY = 4 * 1024 * 1024
OPEN = 0  # the upstream session has had no write: it can take one
SPENT = -1  # a write to it began (and may have failed, or be cut): it takes no other
_COLUMNS = "id, repo, location, upstream_url, upstream, created, updated, owner"


@dataclass
class UploadRow:
    id: str
    repo: str  # repository path, as upstream knows it
    location: str | None
    upstream_url: str  # upstream's session (opaque; never logged or shown)
    upstream: int  # OPEN, SPENT, or the bytes a completed write left there
    created: float
    updated: float
    owner: str | None  # the identity that opened it; None: a row from before owners

    @property
    def repository(self) -> Repository:
        return Repository(self.repo, self.location)


class UploadTable:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def put(self, row: UploadRow) -> None:
        values = (row.id, row.repo, row.location, row.upstream_url, row.upstream, row.created,
                  row.updated, row.owner)  # fmt: skip
        sql = f"INSERT OR REPLACE INTO upload_sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        async with self._db.execute(sql, values):
            pass  # closed at once (see proxy.cache.rows.Rows)
        await self._db.commit()

    async def get(self, upload_id: str) -> UploadRow | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM upload_sessions WHERE id = ?", (upload_id,)
        ) as cursor:
            found = await cursor.fetchone()
        if found is None:
            return None
        return UploadRow(
            str(found[0]), str(found[1]), found[2], str(found[3]), int(found[4]),
            float(found[5]), float(found[6]), None if found[7] is None else str(found[7]),
        )  # fmt: skip

    async def delete(self, upload_id: str) -> None:
        async with self._db.execute("DELETE FROM upload_sessions WHERE id = ?", (upload_id,)):
            pass  # closed at once (see proxy.cache.rows.Rows)
        await self._db.commit()

    async def expire(self, before: float) -> list[str]:
        """Forget sessions not touched since ``before``; returns their ids."""
        async with self._db.execute(
            "DELETE FROM upload_sessions WHERE updated < ? RETURNING id", (before,)
        ) as cursor:
            gone = [str(row[0]) async for row in cursor]
        await self._db.commit()
        return gone

    async def ids(self) -> set[str]:
        async with self._db.execute("SELECT id FROM upload_sessions") as cursor:
            return {str(row[0]) async for row in cursor}

    async def owners(self) -> list[tuple[str, str, float]]:
        """(id, owner, updated) of every session that has an owner."""
        async with self._db.execute(
            "SELECT id, owner, updated FROM upload_sessions WHERE owner IS NOT NULL"
        ) as cursor:
            return [(str(row[0]), str(row[1]), float(row[2])) async for row in cursor]


@dataclass(frozen=True)
class Mark:
    """Where a spool stood: what ``Spool.rollback`` returns it to."""

    size: int
    hasher: hashlib._Hash | None


def _hash_file(path: Path) -> tuple[hashlib._Hash, int] | None:
    try:
        with path.open("rb") as file:
            hasher, size = hashlib.sha256(), 0
            while chunk := file.read(READ_SIZE):
                hasher.update(chunk)
                size += len(chunk)
            return hasher, size
    except FileNotFoundError:
        return None


class Floor(Protocol):
    """The free space a spool must leave (``BlobCache``: ``cache.min_free``)."""

    min_free: int

    def free_bytes(self) -> int: ...


class Allowance(Protocol):
    """What the bytes of one identity's spools may hold
    (``proxy.services.upload_bytes``: ``server.max_upload_bytes_per_identity``)."""

    def take(self, size: int, *, own: int = 0) -> None:
        """Room for ``size`` more bytes in a spool holding ``own``, or a RegistryError."""

    def give(self, size: int) -> None:
        """``size`` bytes no longer held (negative: held again, as found; never refused)."""


class Spool:
    """The bytes of one upload as the client sent them, on disk, with their sha256.

    Writes go straight to the kernel (no buffer), so a full disk shows at the write
    that hit it. A spool that could not keep a byte is ``lost``: it still counts what
    passed (the client's offset), but can neither be replayed nor cached. What it
    holds on disk is taken from ``allowance`` before a byte is written and given back
    when cut off, lost, discarded or handed to the cache.
    """

    def __init__(
        self,
        path: Path,
        *,
        fresh: bool = True,
        floor: Floor | None = None,
        allowance: Allowance | None = None,
    ) -> None:
        self.path = path
        self.size = 0
        self._hash: hashlib._Hash | None = hashlib.sha256()
        self._fd: int | None = None
        self._floor = floor
        self._budget = 0  # bytes that may be written before free space is probed again
        self._allowance = allowance
        self._held = 0  # bytes on disk, as taken from the allowance
        if fresh:
            path.write_bytes(b"")

    @classmethod
    async def reopen(
        cls, path: Path, floor: Floor | None = None, allowance: Allowance | None = None
    ) -> Spool | None:
        """The spool a restarted proxy finds, hashed again; None when its file is gone.
        Its bytes count against ``allowance`` whatever the cap: they are held already."""
        hashed = await asyncio.to_thread(_hash_file, path)
        if hashed is None:
            return None
        spool = cls(path, fresh=False, floor=floor)
        spool._hash, spool.size = hashed
        spool._allowance = allowance
        if allowance is not None:
            allowance.give(-spool.size)  # counted, never refused
            spool._held = spool.size
        return spool

    def _hold(self, size: int) -> None:
        """What the spool holds on disk is now ``size``: the allowance follows."""
        if self._allowance is not None and size != self._held:
            self._allowance.give(self._held - size)
        self._held = size

    @property
    def lost(self) -> bool:
        return self._hash is None

    def write(self, piece: bytes) -> None:
        """Append ``piece``; OSError (a full disk) leaves the spool for its caller to
        roll back (``rollback``) or give up (``lose``)."""
        if self._hash is None:
            self.size += len(piece)
            return
        self._keep_floor(len(piece))
        if self._allowance is not None:
            self._allowance.take(len(piece), own=self._held)  # before a byte is written
            self._held += len(piece)
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            view = memoryview(piece)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self._hold(self.size)  # the caller rolls back or loses what did reach disk
            raise
        self._hash.update(piece)
        self.size += len(piece)

    def _keep_floor(self, size: int) -> None:
        """ENOSPC, before a byte is written, when ``size`` more would take the disk
        below the floor; the probe runs once per ``PROBE_EVERY`` bytes or room seen."""
        if self._floor is None:
            return
        self._budget -= size
        if self._budget >= 0:
            return
        room = self._floor.free_bytes() - self._floor.min_free
        if room < size:
            self._budget = 0
            raise OSError(errno.ENOSPC, "the cache disk is at its floor (cache.min_free)")
        self._budget = min(room, PROBE_EVERY) - size

    def mark(self) -> Mark:
        return Mark(self.size, self._hash.copy() if self._hash is not None else None)

    def rollback(self, mark: Mark) -> None:
        """Back to ``mark``: the bytes after it cut off (a refused or failed chunk)."""
        self.pause()
        self.size = mark.size
        if self._hash is None or mark.hasher is None:
            return  # lost since: nothing kept to cut
        os.truncate(self.path, mark.size)
        self._hash = mark.hasher.copy()
        self._hold(mark.size)

    def lose(self) -> None:
        """Stop keeping bytes (the disk is full); what passed is still counted."""
        self.pause()
        self._hash = None
        self.path.unlink(missing_ok=True)
        self._hold(0)
        log.warning("upload spool %s: no room on the cache disk; bytes not kept", self.path.name)

    def pause(self) -> None:
        """Close the file between requests (a session may wait a long time)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def replay(self, end: int) -> AsyncIterator[bytes]:
        """The first ``end`` bytes, read from the file a piece at a time."""
        fd = await asyncio.to_thread(os.open, self.path, os.O_RDONLY)
        try:
            offset = 0
            while offset < end:
                piece = await asyncio.to_thread(os.pread, fd, min(READ_SIZE, end - offset), offset)
                if not piece:
                    raise OSError(f"upload spool ended {end - offset} bytes early")
                offset += len(piece)
                yield piece
        finally:
            os.close(fd)

    async def matches(self, digest: Digest) -> bool:
        if self._hash is None:
            return False
        if digest.algorithm == "sha256":
            return self._hash.hexdigest() == digest.hex
        self.pause()
        actual = await asyncio.to_thread(BlobStore.rehash, self.path, digest.algorithm)
        return actual == digest.hex

    def discard(self) -> None:
        """Remove the bytes; the spool keeps nothing more."""
        self.pause()
        self._hash = None
        self.path.unlink(missing_ok=True)
        self._hold(0)

    def hand_over(self) -> None:
        """The file is the cache's now (or gone with it): the spool holds nothing."""
        self.pause()
        self._hold(0)


class UploadFiles:
    """``CACHE/uploads/``: one spool file per session."""

    def __init__(self, root: Path, *, floor: Floor | None = None) -> None:
        self.root = root / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        self.floor = floor

    def spool(self, upload_id: str, allowance: Allowance | None = None) -> Spool:
        return Spool(self.root / upload_id, floor=self.floor, allowance=allowance)

    async def reopen(self, upload_id: str, allowance: Allowance | None = None) -> Spool | None:
        return await Spool.reopen(self.root / upload_id, self.floor, allowance)

    def size(self, upload_id: str) -> int:
        """The bytes a session's spool holds on disk (0: no file)."""
        try:
            return (self.root / upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def remove(self, upload_id: str) -> None:
        (self.root / upload_id).unlink(missing_ok=True)

    def clean(self, keep: set[str]) -> int:
        """Remove files of sessions that are gone; returns how many."""
        removed = 0
        for path in self.root.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


async def recover(table: UploadTable, files: UploadFiles, now: float) -> int:
    """Start-up: forget sessions untouched since ``now - UPLOAD_TTL`` (``now``: the
    clock's epoch seconds, as the rows' times are) and remove bytes no session owns."""
    expired = await table.expire(now - UPLOAD_TTL)
    removed = await asyncio.to_thread(files.clean, await table.ids())
    if expired or removed:
        log.info("uploads: %d expired sessions forgotten, %d files removed", len(expired), removed)
    return removed
