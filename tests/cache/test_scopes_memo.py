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
