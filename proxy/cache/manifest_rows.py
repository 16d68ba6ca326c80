"""The index's stores of manifests and tags, with the memos that let a warm hit cost
no query at all: tags by (repository, tag), manifest bodies up to ``MEMO_BYTES``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import aiosqlite

from proxy.cache.rows import Rows
from proxy.clock import Clock
from proxy.oci.digest import Digest

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


class TagRows(Rows):
    """Which manifest each (repository, tag) names, and when it was fetched and last
    verified upstream."""

    def __init__(self, db: aiosqlite.Connection, clock: Clock) -> None:
        super().__init__(db, clock)
        self._memo: dict[tuple[str, str], TagRow] = {}

    async def get(self, repo: str, tag: str) -> TagRow | None:
        key = (repo, tag)
        row = self._memo.get(key)
        if row is not None:
            return row
        async with self.db.execute(
            "SELECT digest, media_type, fetched, verified FROM tags WHERE repo = ? AND tag = ?",
            key,
        ) as cursor:
            found = await cursor.fetchone()
        if found is None:
            return None
        row = self._memo[key] = TagRow(Digest.parse(found[0]), found[1], found[2], found[3])
        return row

    async def put(self, repo: str, tag: str, digest: Digest, media_type: str) -> TagRow:
        now = self.clock.time()
        row = self._memo[(repo, tag)] = TagRow(digest, media_type, now, now)
        await self.run(
            "INSERT OR REPLACE INTO tags (repo, tag, digest, media_type, fetched, verified)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (repo, tag, str(digest), media_type, now, now),
        )
        await self.db.commit()
        return row

    async def mark_verified(self, repo: str, tag: str) -> None:
        row = self._memo.get((repo, tag))
        now = self.clock.time()
        if row is not None:
            self._memo[(repo, tag)] = TagRow(row.digest, row.media_type, row.fetched, now)
        await self.run("UPDATE tags SET verified = ? WHERE repo = ? AND tag = ?", (now, repo, tag))
        await self.db.commit()

    async def delete(self, repo: str, tag: str) -> None:
        self._memo.pop((repo, tag), None)
        await self.run("DELETE FROM tags WHERE repo = ? AND tag = ?", (repo, tag))
        await self.db.commit()

    async def names(self, repo: str) -> list[str]:
        """The tags of ``repo`` in the cache, sorted."""
        async with self.db.execute(
            "SELECT tag FROM tags WHERE repo = ? ORDER BY tag", (repo,)
        ) as cursor:
            return [str(tag) async for (tag,) in cursor]

    def forget(self, digests: set[str]) -> None:
        """Drop the memo of tags naming ``digests`` (their rows went with the manifests)."""
        for key in [k for k, row in self._memo.items() if str(row.digest) in digests]:
            del self._memo[key]


class ManifestRows(Rows):
    """Manifests by digest (their bodies when small enough) and what each references."""

    def __init__(self, db: aiosqlite.Connection, clock: Clock, tags: TagRows) -> None:
        super().__init__(db, clock)
        self.tags = tags
        self._memo: OrderedDict[Digest, ManifestRow] = OrderedDict()
        self._memo_bytes = 0

    async def put(self, row: ManifestRow, children: Iterable[Digest] = ()) -> None:
        await self.run(
            "INSERT OR IGNORE INTO manifests (digest, media_type, size, body, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (str(row.digest), row.media_type, row.size, row.body, self.clock.time()),
        )
        await self.run_many(
            "INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)",
            [(str(row.digest), str(child)) for child in children],
        )
        await self.db.commit()
        self._remember(row)

    async def get(self, digest: Digest) -> ManifestRow | None:
        row = self._memo.get(digest)
        if row is not None:
            self._memo.move_to_end(digest)
            return row
        async with self.db.execute(
            "SELECT media_type, size, body FROM manifests WHERE digest = ?", (str(digest),)
        ) as cursor:
            found = await cursor.fetchone()
        if found is None:
            return None
        row = ManifestRow(digest, str(found[0]), int(found[1]), found[2])
        self._remember(row)
        return row

    async def remove(self, digests: Iterable[Digest]) -> None:
        """Forget manifests, their references and the tags that point at them."""
        keys = [(str(d),) for d in digests]
        gone = {key for (key,) in keys}
        for sql in (
            "DELETE FROM manifests WHERE digest = ?",
            "DELETE FROM manifest_refs WHERE manifest = ?",
            "DELETE FROM tags WHERE digest = ?",
        ):
            await self.run_many(sql, keys)
        await self.db.commit()
        for digest in [d for d in self._memo if str(d) in gone]:
            self._memo_bytes -= len(self._memo.pop(digest).body or b"")
        self.tags.forget(gone)

    async def children(self, digest: Digest) -> list[Digest]:
        async with self.db.execute(
            "SELECT child FROM manifest_refs WHERE manifest = ?", (str(digest),)
        ) as cursor:
            return [Digest.parse(child) async for (child,) in cursor]

    def _remember(self, row: ManifestRow) -> None:
        if row.body is None or row.digest in self._memo:
            return
        self._memo[row.digest] = row
        self._memo_bytes += len(row.body)
        while self._memo_bytes > MEMO_BYTES:
            _, old = self._memo.popitem(last=False)
            self._memo_bytes -= len(old.body or b"")
