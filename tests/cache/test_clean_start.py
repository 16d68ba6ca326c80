"""Start-up after a clean close does no O(cached blobs) work; after a crash or a change
by hand it reconciles files and index as before (``proxy.cache.cleanstate``).

Each start is the real composition root (``open_services``) on a real cache directory
(and a crash a real ``kill -9`` of a proxy process); the reconciliation's full
listings are counted by wrapping the two calls that do them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.cache.rows import BlobRows
from proxy.cache.store import BlobStore
from proxy.oci.digest import Digest
from proxy.services.container import open_services
from testkit.proxyharness import proxy_settings
from testkit.proxyprocess import ProxyProcess

UPSTREAM = "http://127.0.0.1:9/{location}"  # never asked: nothing here goes upstream


@pytest.fixture
def full_listings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every listing of all blob files or all blob rows, by name."""
    calls: list[str] = []
    iter_blobs, all_blobs = BlobStore.iter_blobs, BlobRows.sizes

    def counted_files(self: BlobStore) -> Any:
        calls.append("files")
        return iter_blobs(self)

    async def counted_rows(self: BlobRows) -> dict[str, int]:
        calls.append("rows")
        return await all_blobs(self)

    monkeypatch.setattr(BlobStore, "iter_blobs", counted_files)
    monkeypatch.setattr(BlobRows, "sizes", counted_rows)
    yield calls


async def _start(tmp_path: Path, blobs: int = 0) -> list[Digest]:
    """Open the cache (start-up recovery runs), add ``blobs`` blobs, close cleanly."""
    added = []
    async with open_services(proxy_settings(tmp_path, UPSTREAM)) as services:
        for n in range(blobs):
            data = b"blob %d" % n
            temp = services.cache.store.new_temp()
            temp.write_bytes(data)
            added.append(Digest.of(data))
            await services.cache.admit(temp, added[-1], len(data))
    return added


async def test_a_clean_start_lists_neither_files_nor_rows(
    tmp_path: Path, full_listings: list[str]
) -> None:
    await _start(tmp_path, blobs=20)  # a new cache: reconciled once
    assert full_listings == ["rows", "files"]
    full_listings.clear()
    await _start(tmp_path)
    await _start(tmp_path)
    assert full_listings == []


async def test_a_process_killed_while_another_ran_makes_the_next_start_reconcile(
    tmp_path: Path, full_listings: list[str]
) -> None:
    await _start(tmp_path, blobs=2)
    cache = tmp_path / "cache"
    with ProxyProcess(cache, UPSTREAM) as crashing:
        async with open_services(proxy_settings(tmp_path, UPSTREAM)):
            crashing.kill()  # while this process has the cache open, and closes cleanly after
    assert (cache / "clean.json").exists()  # the clean close alone cannot tell
    full_listings.clear()
    await _start(tmp_path)
    assert full_listings == ["rows", "files"]
    assert list((cache / "sessions").iterdir()) == []  # the crashed entry, forgotten
    full_listings.clear()
    await _start(tmp_path)
    assert full_listings == []


async def test_a_change_by_hand_makes_the_next_start_reconcile(
    tmp_path: Path, full_listings: list[str]
) -> None:
    digests = await _start(tmp_path, blobs=5)
    cache = tmp_path / "cache"

    # A blob file removed by hand: its row is dropped at the next start.
    BlobStore(cache).remove(digests[0])
    full_listings.clear()
    async with open_services(proxy_settings(tmp_path, UPSTREAM)) as services:
        assert full_listings == ["rows", "files"]
        assert await services.index.blobs.size(digests[0]) is None
        assert await services.index.blobs.size(digests[1]) == len(b"blob 1")
    full_listings.clear()
    await _start(tmp_path)
    assert full_listings == []


async def test_a_cache_from_before_sessions_is_reconciled_once(
    tmp_path: Path, full_listings: list[str]
) -> None:
    await _start(tmp_path, blobs=3)
    (tmp_path / "cache" / "clean.json").unlink()  # as an older version leaves it
    full_listings.clear()
    await _start(tmp_path)
    await _start(tmp_path)
    assert full_listings == ["rows", "files"]
