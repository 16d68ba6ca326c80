"""The in-memory memo of (repository, digest) pairs is bounded: memory does not grow
with the number of cached blobs, and a pair it forgot is still known from SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cache import scopes
from proxy.cache.index import CacheIndex
from proxy.oci.digest import Digest


async def test_the_memo_stays_bounded_and_forgotten_pairs_are_still_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scopes, "MEMO_PAIRS", 10)
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    try:
        digests = [Digest.of(b"%d" % n) for n in range(25)]
        for digest in digests:
            await index.scopes.add("proj/repo/app", digest)
            assert index.scopes.memo_size <= 10
        for digest in digests:
            assert await index.scopes.stored("proj/repo/app", digest)
            assert index.scopes.memo_size <= 10
        assert not await index.scopes.stored("proj/repo/other", digests[0])
    finally:
        await index.close()


async def test_a_pair_added_soon_is_known_at_once_and_in_the_table_after_a_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scopes, "MEMO_PAIRS", 2)
    path = tmp_path / "index.sqlite3"
    index = await CacheIndex.open(path)
    digests = [Digest.of(b"%d" % n) for n in range(4)]
    try:
        for digest in digests:
            index.scopes.add_soon("proj/repo/app", digest)
        # The memo started over: the first pairs are known from what is pending.
        assert not index.scopes.known("proj/repo/app", digests[0])
        assert await index.scopes.stored("proj/repo/app", digests[0])
        await index.scopes.forget("proj/repo/app", digests[1])
        assert not await index.scopes.stored("proj/repo/app", digests[1])
        await index.flush()
    finally:
        await index.close()
    again = await CacheIndex.open(path)  # what the table holds, no memo
    try:
        found = [await again.scopes.stored("proj/repo/app", d) for d in digests]
        assert found == [True, False, True, True]
    finally:
        await again.close()


async def test_pairs_added_soon_are_written_at_close(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = await CacheIndex.open(path)
    index.scopes.add_soon("proj/repo/app", Digest.of(b"x"))
    await index.close()
    again = await CacheIndex.open(path)
    try:
        assert await again.scopes.stored("proj/repo/app", Digest.of(b"x"))
    finally:
        await again.close()


async def test_the_holders_of_a_digest_include_pairs_not_yet_flushed(tmp_path: Path) -> None:
    """Lending a cached blob to a push asks who holds it (``MountService.lendable``);
    a fill's pair noted by ``add_soon`` counts before the flush writes it (a manifest
    PUT right after the pull was refused MANIFEST_BLOB_UNKNOWN while it sat pending)."""
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    digest = Digest.of(b"layer")
    try:
        await index.scopes.add("proj/stored/app", digest)
        index.scopes.add_soon("proj/pending/app", digest)
        index.scopes.add_soon("proj/stored/app", digest)  # known already: no second entry
        assert await index.scopes.holders(digest) == ["proj/stored/app", "proj/pending/app"]
        await index.flush()
        assert sorted(await index.scopes.holders(digest)) == [
            "proj/pending/app",
            "proj/stored/app",
        ]
    finally:
        await index.close()
