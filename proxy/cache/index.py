"""The cache index in SQLite (WAL): blobs, manifests, tags, pins, uploads.

SQLite is the truth; small in-memory maps in front of it make a warm hit cost no
query at all (tags and manifest bodies), and access times are batched: ``touch``
records in memory and ``flush`` writes them every few seconds, so a hot blob is
not a write per request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

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
# What pinned manifests need. CROSS JOIN keeps pins the outer loop: the planner would
# otherwise scan every manifest reference (O(cached manifests) per eviction batch).
PINNED = (
    "SELECT child FROM pins CROSS JOIN manifest_refs ON manifest_refs.manifest = pins.digest"
    " UNION SELECT digest FROM pins"
)
BATCH = 500  # rows per statement in bulk deletes (SQLite allows 32766 parameters)
# Manifests (bodies) kept in memory for query-free hits; bounded in bytes.
MEMO_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TagRow:
    digest: Digest
    media_type: str
    fetched: float
    verified: float


@dataclass(frozen=True, slots=True)
class ManifestRow:
    digest: Digest
    media_type: str
    size: int
    body: bytes | None  # None: too large for the index, kept as a blob file


class CacheIndex:
    def __init__(self, db: aiosqlite.Connection, clock: Clock = SYSTEM) -> None:
        self._db = db
        self.clock = clock
        self._tags: dict[tuple[str, str], TagRow] = {}
        self._manifests: OrderedDict[Digest, ManifestRow] = OrderedDict()
        self._memo_bytes = 0
        self._touched: dict[str, tuple[float, int]] = {}
        self.total_bytes = 0
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
            await index.refresh_total()
        except BaseException:
            await db.close()
            raise
        return index

    async def refresh_total(self) -> int:
        """Recount ``total_bytes`` from the table: another process (``gar-proxy gc``,
        ``warm``, a second proxy) may have added or removed blobs since we counted."""
        return (await self.tally())[1]

    async def tally(self) -> tuple[int, int]:
        """(blob rows, their bytes), recounted; ``total_bytes`` is set from it."""
        async with self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs") as cursor:
            row = await cursor.fetchone()
        count, self.total_bytes = (int(row[0]), int(row[1])) if row else (0, 0)
        return count, self.total_bytes

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement whose cursor is closed at once: a cursor left open keeps its
        statement busy, and the next coroutine running the same SQL on this shared
        connection can then fail with "bad parameter or other API misuse"."""
        async with self._db.execute(sql, params):
            pass

    async def _run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._db.executemany(sql, rows):
            pass

    @property
    def db(self) -> aiosqlite.Connection:
        """The connection, for tables kept by other modules (``proxy.cache.upload_store``)."""
        return self._db

    async def close(self) -> None:
        await self.flush()
        await self._db.close()

    # --- blobs ---------------------------------------------------------------------------

    async def add_blob(self, digest: Digest, size: int, media_type: str | None = None) -> None:
        now = self.clock.time()
        async with self._db.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, media_type, created, last_access)"
            " VALUES (?, ?, ?, ?, ?)",
            (str(digest), size, media_type, now, now),
        ) as cursor:
            if cursor.rowcount:
                self.total_bytes += size
        await self._db.commit()

    def touch(self, digest: Digest) -> None:
        key = str(digest)
        hits = self._touched.get(key, (0.0, 0))[1]
        self._touched[key] = (self.clock.time(), hits + 1)

    async def flush(self) -> None:
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        await self._run_many(
            "UPDATE blobs SET last_access = ?, hits = hits + ? WHERE digest = ?",
            [(when, hits, digest) for digest, (when, hits) in touched.items()],
        )
        # Manifests are touched the same way (a large one is a blob file as well).
        await self._run_many(
            "UPDATE manifests SET last_access = ? WHERE digest = ?",
            [(when, digest) for digest, (when, _) in touched.items()],
        )
        await self._db.commit()

    async def blob_size(self, digest: Digest) -> int | None:
        async with self._db.execute(
            "SELECT size FROM blobs WHERE digest = ?", (str(digest),)
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else None

    async def remove_blobs(self, digests: Iterable[Digest]) -> None:
        keys = [str(d) for d in digests]
        # A statement per batch, not per blob: gc evicting 10k blobs was 10k round trips.
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            marks = ", ".join("?" * len(batch))
            async with self._db.execute(
                f"DELETE FROM blobs WHERE digest IN ({marks}) RETURNING size", batch
            ) as cursor:
                self.total_bytes -= sum([int(size) async for (size,) in cursor])
        for key in keys:
            self._touched.pop(key, None)
        await self._db.commit()

    async def all_blobs(self) -> dict[str, int]:
        async with self._db.execute("SELECT digest, size FROM blobs") as cursor:
            return {str(digest): int(size) async for digest, size in cursor}

    async def eviction_candidates(self, limit: int = 256) -> list[tuple[Digest, int]]:
        """Least recently used blobs that no pinned manifest needs."""
        await self.flush()
        async with self._db.execute(
            f"SELECT digest, size FROM blobs WHERE digest NOT IN ({PINNED})"
            " ORDER BY last_access LIMIT ?",
            (limit,),
        ) as cursor:
            return [(Digest.parse(digest), int(size)) async for digest, size in cursor]

    # --- manifests -----------------------------------------------------------------------

    async def put_manifest(self, row: ManifestRow, children: Iterable[Digest] = ()) -> None:
        await self._run(
            "INSERT OR IGNORE INTO manifests (digest, media_type, size, body, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (str(row.digest), row.media_type, row.size, row.body, self.clock.time()),
        )
        await self._run_many(
            "INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)",
            [(str(row.digest), str(child)) for child in children],
        )
        await self._db.commit()
        self._remember(row)

    async def get_manifest(self, digest: Digest) -> ManifestRow | None:
        row = self._manifests.get(digest)
        if row is not None:
            self._manifests.move_to_end(digest)
            return row
        async with self._db.execute(
            "SELECT media_type, size, body FROM manifests WHERE digest = ?", (str(digest),)
        ) as cursor:
            found = await cursor.fetchone()
        if found is None:
            return None
        row = ManifestRow(digest, str(found[0]), int(found[1]), found[2])
        self._remember(row)
        return row

    async def remove_manifests(self, digests: Iterable[Digest]) -> None:
        """Forget manifests, their references and the tags that point at them."""
        keys = [(str(d),) for d in digests]
        gone = {str(d) for d in digests}
        for sql in (
            "DELETE FROM manifests WHERE digest = ?",
            "DELETE FROM manifest_refs WHERE manifest = ?",
            "DELETE FROM tags WHERE digest = ?",
        ):
            await self._run_many(sql, keys)
        await self._db.commit()
        for digest in [d for d in self._manifests if str(d) in gone]:
            self._memo_bytes -= len(self._manifests.pop(digest).body or b"")
        for key in [k for k, row in self._tags.items() if str(row.digest) in gone]:
            del self._tags[key]

    def _remember(self, row: ManifestRow) -> None:
        if row.body is None or row.digest in self._manifests:
            return
        self._manifests[row.digest] = row
        self._memo_bytes += len(row.body)
        while self._memo_bytes > MEMO_BYTES:
            _, old = self._manifests.popitem(last=False)
            self._memo_bytes -= len(old.body or b"")

    async def children(self, digest: Digest) -> list[Digest]:
        async with self._db.execute(
            "SELECT child FROM manifest_refs WHERE manifest = ?", (str(digest),)
        ) as cursor:
            return [Digest.parse(child) async for (child,) in cursor]

    # --- tags ----------------------------------------------------------------------------

    async def get_tag(self, repo: str, tag: str) -> TagRow | None:
        key = (repo, tag)
        row = self._tags.get(key)
        if row is not None:
            return row
        async with self._db.execute(
            "SELECT digest, media_type, fetched, verified FROM tags WHERE repo = ? AND tag = ?",
            key,
        ) as cursor:
            found = await cursor.fetchone()
        if found is None:
            return None
        row = self._tags[key] = TagRow(Digest.parse(found[0]), found[1], found[2], found[3])
        return row

    async def put_tag(self, repo: str, tag: str, digest: Digest, media_type: str) -> TagRow:
        now = self.clock.time()
        row = self._tags[(repo, tag)] = TagRow(digest, media_type, now, now)
        await self._run(
            "INSERT OR REPLACE INTO tags (repo, tag, digest, media_type, fetched, verified)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (repo, tag, str(digest), media_type, now, now),
        )
        await self._db.commit()
        return row

    async def mark_verified(self, repo: str, tag: str) -> None:
        row = self._tags.get((repo, tag))
        now = self.clock.time()
        if row is not None:
            self._tags[(repo, tag)] = TagRow(row.digest, row.media_type, row.fetched, now)
        await self._run("UPDATE tags SET verified = ? WHERE repo = ? AND tag = ?", (now, repo, tag))
        await self._db.commit()

    async def delete_tag(self, repo: str, tag: str) -> None:
        self._tags.pop((repo, tag), None)
        await self._run("DELETE FROM tags WHERE repo = ? AND tag = ?", (repo, tag))
        await self._db.commit()

    async def list_tags(self, repo: str) -> list[str]:
        async with self._db.execute(
            "SELECT tag FROM tags WHERE repo = ? ORDER BY tag", (repo,)
        ) as cursor:
            return [str(tag) async for (tag,) in cursor]

    # --- pins and cached documents (tag lists, referrers) --------------------------------

    async def pin(self, digests: Iterable[Digest]) -> None:
        now = self.clock.time()
        await self._run_many(
            "INSERT OR IGNORE INTO pins (digest, created) VALUES (?, ?)",
            [(str(d), now) for d in digests],
        )
        await self._db.commit()

    async def put_document(self, key: str, media_type: str, body: bytes, headers: str) -> None:
        await self._run(
            "INSERT OR REPLACE INTO documents (key, media_type, body, headers, fetched)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, media_type, body, headers, self.clock.time()),
        )
        await self._db.commit()

    async def delete_documents(self, prefix: str) -> None:
        """Forget cached listings whose key starts with ``prefix`` (they went out of date)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        await self._run("DELETE FROM documents WHERE key LIKE ? ESCAPE '\\'", (escaped + "%",))
        await self._db.commit()

    async def get_document(self, key: str) -> tuple[str, bytes, str, float] | None:
        async with self._db.execute(
            "SELECT media_type, body, headers, fetched FROM documents WHERE key = ?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        return (str(row[0]), bytes(row[1]), str(row[2]), float(row[3])) if row else None


async def _add_column(db: aiosqlite.Connection, table: str, column: str) -> None:
    """Caches made by an older version lack the column; SQLite has no IF NOT EXISTS."""
    async with db.execute(f"PRAGMA table_info({table})") as cursor:
        names = {str(row[1]) async for row in cursor}
    if column.split()[0] not in names:
        await db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
