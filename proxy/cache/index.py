"""The cache index in SQLite (WAL): one connection, a few stores over it.

::

    index = await CacheIndex.open(root / "index.sqlite3", clock)
    await index.blobs.add(digest, size)          # BlobRows: sizes, the running total
    await index.manifests.get(digest)            # ManifestRows: bodies, references
    await index.tags.put(repo, tag, digest, mt)  # TagRows: tag -> digest, verified when
    await index.pins.add([digest])               # Pins: what eviction never takes
    await index.documents.get(key)               # Documents: listings, locations
    index.scopes                                 # RepoScopes: which repository has what
    index.touch(digest); await index.flush()     # reads (and add_soon pairs), in batches

SQLite is the truth; small in-memory maps in front of it make a warm hit cost no
query at all (tags and manifest bodies), and access times are batched: ``touch``
records in memory and ``flush`` writes them every few seconds, so a hot blob is
not a write per request.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from proxy.cache.manifest_rows import ManifestRows, TagRows
from proxy.cache.rows import AccessTimes, BlobRows, Documents, Pins
from proxy.cache.scopes import RepoScopes
from proxy.clock import SYSTEM, Clock
from proxy.oci.digest import Digest

SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT,
    created REAL NOT NULL, last_access REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS blobs_by_access ON blobs (last_access);
CREATE TABLE IF NOT EXISTS manifests (
    digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, size INTEGER NOT NULL,
    body BLOB, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS manifest_refs (
    manifest TEXT NOT NULL, child TEXT NOT NULL, PRIMARY KEY (manifest, child));
CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,
    fetched REAL NOT NULL, verified REAL NOT NULL, PRIMARY KEY (repo, tag));
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (digest);
CREATE TABLE IF NOT EXISTS pins (digest TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    key TEXT PRIMARY KEY, media_type TEXT NOT NULL, body BLOB NOT NULL, headers TEXT NOT NULL,
    fetched REAL NOT NULL);
-- Upload sessions (proxy.cache.upload_store). The table before it (uploads) mapped a
-- chunk to an upstream chunk, which GAR does not take; its sessions cannot go on.
DROP TABLE IF EXISTS uploads;
CREATE TABLE IF NOT EXISTS upload_sessions (
    id TEXT PRIMARY KEY, repo TEXT NOT NULL, location TEXT, upstream_url TEXT NOT NULL,
    upstream INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
"""


class CacheIndex:
    def __init__(self, db: aiosqlite.Connection, clock: Clock = SYSTEM) -> None:
        self.db = db  # also for tables kept by other modules (proxy.cache.upload_store)
        self.clock = clock
        self.reads = AccessTimes(db, clock)
        self.blobs = BlobRows(db, clock, self.reads)
        self.tags = TagRows(db, clock)
        self.manifests = ManifestRows(db, clock, self.tags)
        self.pins = Pins(db, clock)
        self.documents = Documents(db, clock)
        self.scopes = RepoScopes(db)  # which repositories hold which digests

    @classmethod
    async def open(cls, path: Path, clock: Clock = SYSTEM) -> CacheIndex:
        db = await aiosqlite.connect(path)
        try:  # the connection's thread is not a daemon: a failed open must end it
            await db.executescript(SCHEMA)
            await _add_column(db, "manifests", "last_access REAL")  # cache.max_age; NULL: created
            # Whose upload session it is; NULL (a row from before): nobody's, restarted.
            await _add_column(db, "upload_sessions", "owner TEXT")
            await RepoScopes.setup(db)
            await db.commit()
            index = cls(db, clock)
            await index.blobs.recount()
        except BaseException:
            await db.close()
            raise
        return index

    def touch(self, digest: Digest) -> None:
        """A read of a blob or manifest, for eviction and ``cache.max_age``."""
        self.reads.touch(digest)

    async def flush(self) -> None:
        """Write the reads ``touch`` recorded and the pairs ``scopes.add_soon`` noted."""
        await self.scopes.flush()
        await self.reads.flush()

    async def close(self) -> None:
        await self.flush()
        await self.db.close()


async def _add_column(db: aiosqlite.Connection, table: str, column: str) -> None:
    """Caches made by an older version lack the column; SQLite has no IF NOT EXISTS."""
    async with db.execute(f"PRAGMA table_info({table})") as cursor:
        names = {str(row[1]) async for row in cursor}
    if column.split()[0] not in names:
        await db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
