"""The index's stores of blobs, pins and documents, over its one connection
(``proxy.cache.index.CacheIndex`` opens it and holds them).

Each store is a few statements on one table. A statement's cursor is closed at once
(``Rows.run``): a cursor left open keeps its statement busy, and the next coroutine
running the same SQL on the shared connection can then fail with "bad parameter or
other API misuse".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from proxy.clock import Clock
from proxy.oci.digest import Digest

# What pinned manifests need. CROSS JOIN keeps pins the outer loop: the planner would
# otherwise scan every manifest reference (O(cached manifests) per eviction batch).
PINNED = (
    "SELECT child FROM pins CROSS JOIN manifest_refs ON manifest_refs.manifest = pins.digest"
    " UNION SELECT digest FROM pins"
)
BATCH = 500  # rows per statement in bulk deletes (SQLite allows 32766 parameters)


class Rows:
    """Statements over the index's connection, stamped by its clock."""

    def __init__(self, db: aiosqlite.Connection, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        async with self.db.execute(sql, params):
            pass

    async def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.db.executemany(sql, rows):
            pass


class AccessTimes(Rows):
    """Reads of blobs and manifests, kept in memory and written in one batch by
    ``flush`` every few seconds: a hot blob is not a write per request."""

    def __init__(self, db: aiosqlite.Connection, clock: Clock) -> None:
        super().__init__(db, clock)
        self._touched: dict[str, tuple[float, int]] = {}

    def touch(self, digest: Digest) -> None:
        key = str(digest)
        hits = self._touched.get(key, (0.0, 0))[1]
        self._touched[key] = (self.clock.time(), hits + 1)

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._touched.pop(key, None)

    async def flush(self) -> None:
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        await self.run_many(
            "UPDATE blobs SET last_access = ?, hits = hits + ? WHERE digest = ?",
            [(when, hits, digest) for digest, (when, hits) in touched.items()],
        )
        # Manifests are touched the same way (a large one is a blob file as well).
        await self.run_many(
            "UPDATE manifests SET last_access = ? WHERE digest = ?",
            [(when, digest) for digest, (when, _) in touched.items()],
        )
        await self.db.commit()


class BlobRows(Rows):
    """The cached blobs: size, and the running total ``total_bytes``."""

    def __init__(self, db: aiosqlite.Connection, clock: Clock, reads: AccessTimes) -> None:
        super().__init__(db, clock)
        self.reads = reads
        self.total_bytes = 0

    async def recount(self) -> int:
        """Recount ``total_bytes`` from the table: another process (``gar-proxy gc``,
        ``warm``, a second proxy) may have added or removed blobs since we counted."""
        return (await self.tally())[1]

    async def tally(self) -> tuple[int, int]:
        """(blob rows, their bytes), recounted; ``total_bytes`` is set from it."""
        async with self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs") as cursor:
            row = await cursor.fetchone()
        count, self.total_bytes = (int(row[0]), int(row[1])) if row else (0, 0)
        return count, self.total_bytes

    async def add(self, digest: Digest, size: int, media_type: str | None = None) -> None:
        now = self.clock.time()
        async with self.db.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, media_type, created, last_access)"
            " VALUES (?, ?, ?, ?, ?)",
            (str(digest), size, media_type, now, now),
        ) as cursor:
            if cursor.rowcount:
                self.total_bytes += size
        await self.db.commit()

    async def size(self, digest: Digest) -> int | None:
        async with self.db.execute(
            "SELECT size FROM blobs WHERE digest = ?", (str(digest),)
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else None

    async def remove(self, digests: Iterable[Digest]) -> None:
        keys = [str(d) for d in digests]
        # A statement per batch, not per blob: gc evicting 10k blobs was 10k round trips.
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            marks = ", ".join("?" * len(batch))
            async with self.db.execute(
                f"DELETE FROM blobs WHERE digest IN ({marks}) RETURNING size", batch
            ) as cursor:
                self.total_bytes -= sum([int(size) async for (size,) in cursor])
        self.reads.forget(keys)
        await self.db.commit()

    async def sizes(self) -> dict[str, int]:
        """Every blob row: digest -> size."""
        async with self.db.execute("SELECT digest, size FROM blobs") as cursor:
            return {str(digest): int(size) async for digest, size in cursor}

    async def eviction_candidates(self, limit: int = 256) -> list[tuple[Digest, int]]:
        """Least recently used blobs that no pinned manifest needs."""
        await self.reads.flush()
        async with self.db.execute(
            f"SELECT digest, size FROM blobs WHERE digest NOT IN ({PINNED})"
            " ORDER BY last_access LIMIT ?",
            (limit,),
        ) as cursor:
            return [(Digest.parse(digest), int(size)) async for digest, size in cursor]


class Pins(Rows):
    """Manifests (and what they need) that eviction never takes (``warm --pin``)."""

    async def add(self, digests: Iterable[Digest]) -> None:
        now = self.clock.time()
        await self.run_many(
            "INSERT OR IGNORE INTO pins (digest, created) VALUES (?, ?)",
            [(str(d), now) for d in digests],
        )
        await self.db.commit()


class Documents(Rows):
    """Cached answers that are not content addressed: tag lists, referrers, locations."""

    async def put(self, key: str, media_type: str, body: bytes, headers: str) -> None:
        await self.run(
            "INSERT OR REPLACE INTO documents (key, media_type, body, headers, fetched)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, media_type, body, headers, self.clock.time()),
        )
        await self.db.commit()

    async def delete_prefix(self, prefix: str) -> None:
        """Forget documents whose key starts with ``prefix`` (they went out of date)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        await self.run("DELETE FROM documents WHERE key LIKE ? ESCAPE '\\'", (escaped + "%",))
        await self.db.commit()

    async def get(self, key: str) -> tuple[str, bytes, str, float] | None:
        async with self.db.execute(
            "SELECT media_type, body, headers, fetched FROM documents WHERE key = ?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        return (str(row[0]), bytes(row[1]), str(row[2]), float(row[3])) if row else None
