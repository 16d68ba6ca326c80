"""Blob uploads in flight: their rows in SQLite and the bytes kept on the way through.

A push streams through the proxy to upstream. For each upload the proxy keeps

- a row (its own id, the repository, upstream's session URL, the offset upstream
  confirmed), so a restart does not lose a session that upstream still holds;
- a ``Tee``: the bytes sent so far in ``CACHE/uploads/<id>`` and their running sha256,
  so a blob whose digest checks out at the final PUT goes straight into the cache.

Hash state cannot be saved, so after a restart (or an upstream failure part-way
through a chunk) ``Tee.resume(offset)`` truncates the file to the offset upstream
confirmed and hashes it again. The files live outside ``tmp/``, which is emptied at
start-up, precisely so that they survive a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import aiosqlite

from proxy.cache.store import BlobStore
from proxy.oci.digest import Digest
from proxy.oci.names import Repository

log = logging.getLogger("gar_proxy.uploads")

READ_SIZE = 1024 * 1024
# Sessions untouched this long are forgotten (with their bytes on disk).
UPLOAD_TTL = 24 * 3600.0
_COLUMNS = "id, repo, location, upstream_url, received, created, updated"


@dataclass
class UploadRow:
    id: str
    repo: str  # repository path, as upstream knows it
    location: str | None
    upstream_url: str  # absolute URL of upstream's session (it changes after each chunk)
    offset: int  # bytes upstream confirmed
    created: float
    updated: float

    @property
    def repository(self) -> Repository:
        return Repository(self.repo, self.location)


class UploadTable:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def put(self, row: UploadRow) -> None:
        async with self._db.execute(
            f"INSERT OR REPLACE INTO uploads ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.repo,
                row.location,
                row.upstream_url,
                row.offset,
                row.created,
                row.updated,
            ),
        ):
            pass  # closed at once (see CacheIndex._run)
        await self._db.commit()

    async def get(self, upload_id: str) -> UploadRow | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM uploads WHERE id = ?", (upload_id,)
        ) as cursor:
            found = await cursor.fetchone()
        if found is None:
            return None
        return UploadRow(
            str(found[0]), str(found[1]), found[2], str(found[3]), int(found[4]),
            float(found[5]), float(found[6]),
        )  # fmt: skip

    async def delete(self, upload_id: str) -> None:
        async with self._db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,)):
            pass  # closed at once (see CacheIndex._run)
        await self._db.commit()

    async def expire(self, before: float) -> list[str]:
        """Forget sessions not touched since ``before``; returns their ids."""
        async with self._db.execute(
            "DELETE FROM uploads WHERE updated < ? RETURNING id", (before,)
        ) as cursor:
            gone = [str(row[0]) async for row in cursor]
        await self._db.commit()
        return gone

    async def ids(self) -> set[str]:
        async with self._db.execute("SELECT id FROM uploads") as cursor:
            return {str(row[0]) async for row in cursor}


def _hash_prefix(path: Path, offset: int) -> hashlib._Hash | None:
    """sha256 of the first ``offset`` bytes of ``path`` (the rest cut off), or None."""
    try:
        with path.open("r+b") as file:
            if file.seek(0, 2) < offset:
                return None
            file.truncate(offset)
            file.seek(0)
            hasher = hashlib.sha256()
            while chunk := file.read(READ_SIZE):
                hasher.update(chunk)
            return hasher
    except FileNotFoundError:
        return None


class Tee:
    """The bytes of one upload as they pass, on disk, with their running sha256.

    A tee that cannot vouch for its bytes (``keep=False``, a lost file, a gap) is
    ``broken``: the upload still goes on, trusted to upstream, but is not cached.
    """

    def __init__(self, path: Path, *, keep: bool = True, fresh: bool = True) -> None:
        self.path = path
        self.keep = keep
        self.size = 0
        self._hash: hashlib._Hash | None = hashlib.sha256() if fresh and keep else None
        self._file: BinaryIO | None = None
        if fresh and keep:
            path.write_bytes(b"")

    @property
    def broken(self) -> bool:
        return self._hash is None

    def write(self, chunk: bytes) -> None:
        if self._hash is None:
            return
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def pause(self) -> None:
        """Close the file between requests (a session may wait a long time)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    async def resume(self, offset: int) -> None:
        """Make the tee hold exactly the first ``offset`` bytes, or mark it broken."""
        self.pause()
        if not self.keep:
            return
        self._hash = await asyncio.to_thread(_hash_prefix, self.path, offset)
        self.size = offset
        if self._hash is None:
            log.info("upload bytes in %s are incomplete; this blob will not be cached", self.path)

    async def matches(self, digest: Digest) -> bool:
        self.pause()
        if self._hash is None:
            return False
        if digest.algorithm == "sha256":
            return self._hash.hexdigest() == digest.hex
        actual = await asyncio.to_thread(BlobStore.rehash, self.path, digest.algorithm)
        return actual == digest.hex

    def discard(self) -> None:
        """Stop keeping bytes and remove those kept."""
        self.pause()
        self.keep = False
        self._hash = None
        self.path.unlink(missing_ok=True)


class UploadFiles:
    """``CACHE/uploads/``: one tee file per session."""

    def __init__(self, root: Path) -> None:
        self.root = root / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)

    def tee(self, upload_id: str, *, keep: bool = True, fresh: bool = True) -> Tee:
        return Tee(self.root / upload_id, keep=keep, fresh=fresh)

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
