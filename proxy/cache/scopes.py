"""Which repositories upstream is known to hold each cached digest in.

The cache is content addressed, but a registry's answers are per repository: a
digest cached for one repository is not proof that another holds it. Pairs are
recorded whenever a repository's fill, manifest fetch, upload, mount or upstream
check shows it; a warm hit costs one set lookup, a cold pair one query.
"""

from __future__ import annotations

import aiosqlite

from proxy.oci.digest import Digest

TABLE = """
CREATE TABLE IF NOT EXISTS repo_digests (
    repo TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repo, digest));
CREATE INDEX IF NOT EXISTS repo_digests_by_digest ON repo_digests (digest);
"""
# A cache from before this table: what its tags prove (the tagged manifests, their
# children and grandchildren: an index's images and their layers) is known already.
BACKFILL = (
    "INSERT OR IGNORE INTO repo_digests SELECT repo, digest FROM tags",
    "INSERT OR IGNORE INTO repo_digests SELECT s.repo, r.child FROM repo_digests s"
    " JOIN manifest_refs r ON r.manifest = s.digest",
    "INSERT OR IGNORE INTO repo_digests SELECT s.repo, r.child FROM repo_digests s"
    " JOIN manifest_refs r ON r.manifest = s.digest",
)
# Pairs remembered in memory. Past this many the memo starts over (a forgotten pair
# costs one primary-key query when next asked), so memory does not grow with the cache.
MEMO_PAIRS = 100_000


class RepoScopes:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._known: set[tuple[str, str]] = set()
        # Pairs noted by ``add_soon``, not yet in the table (``flush`` writes them).
        self._pending: set[tuple[str, str]] = set()

    @staticmethod
    async def setup(db: aiosqlite.Connection) -> None:
        async with db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'repo_digests'"
        ) as cursor:
            exists = await cursor.fetchone() is not None
        await db.executescript(TABLE)
        if not exists:
            for sql in BACKFILL:
                async with db.execute(sql):
                    pass
        await db.commit()

    def known(self, repo: str, digest: Digest) -> bool:
        """The warm path: no query."""
        return (repo, str(digest)) in self._known

    async def stored(self, repo: str, digest: Digest) -> bool:
        """Known from an earlier run (or another process): remembered in memory then."""
        key = (repo, str(digest))
        if key in self._pending:
            self._remember(key)
            return True
        async with self._db.execute(
            "SELECT 1 FROM repo_digests WHERE repo = ? AND digest = ?", key
        ) as cursor:
            found = await cursor.fetchone() is not None
        if found:
            self._remember(key)
        return found

    async def holders(self, digest: Digest) -> list[str]:
        """Every repository known to hold ``digest`` (for a write the cache may lend
        it to only when the caller may pull one of them)."""
        text = str(digest)
        async with self._db.execute(
            "SELECT repo FROM repo_digests WHERE digest = ?", (text,)
        ) as cursor:
            found = [str(row[0]) async for row in cursor]
        # Pairs ``add_soon`` noted and the next flush has not written yet count too.
        pending = sorted(repo for repo, pair_digest in self._pending if pair_digest == text)
        return found + [repo for repo in pending if repo not in found]

    def _remember(self, key: tuple[str, str]) -> None:
        if len(self._known) >= MEMO_PAIRS:
            self._known.clear()
        self._known.add(key)

    @property
    def memo_size(self) -> int:
        return len(self._known)

    async def add(self, repo: str, digest: Digest) -> None:
        key = (repo, str(digest))
        if key in self._known:
            return
        self._remember(key)
        async with self._db.execute("INSERT OR IGNORE INTO repo_digests VALUES (?, ?)", key):
            pass
        await self._db.commit()

    def add_soon(self, repo: str, digest: Digest) -> None:
        """``add`` without waiting for the table: known at once, written by the next
        ``flush`` (the index's, every few seconds and at close). For a fill's start,
        where two trips to SQLite sat between upstream's answer and the client's
        first byte; a pair lost in a crash costs one upstream check when next asked."""
        key = (repo, str(digest))
        if key not in self._known:
            self._remember(key)
            self._pending.add(key)

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, set()
        async with self._db.executemany(
            "INSERT OR IGNORE INTO repo_digests VALUES (?, ?)", sorted(pending)
        ):
            pass
        await self._db.commit()

    async def forget(self, repo: str, digest: Digest) -> None:
        key = (repo, str(digest))
        self._known.discard(key)
        self._pending.discard(key)
        async with self._db.execute("DELETE FROM repo_digests WHERE repo = ? AND digest = ?", key):
            pass
        await self._db.commit()
