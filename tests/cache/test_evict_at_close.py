"""An eviction under way in the background when the proxy closes (``admit`` starts it)
has unlinked its files but not yet deleted their rows: the close stops it and records
no clean state, so the next start reconciles instead of keeping rows without files."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from proxy.cache.blobs import BlobCache
from proxy.oci.digest import Digest
from proxy.services.container import open_services
from testkit.proxyharness import proxy_settings

UPSTREAM = "http://127.0.0.1:9/{location}"


async def test_eviction_cut_by_close_is_reconciled_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unlinked, release = threading.Event(), threading.Event()
    original = BlobCache._remove_files

    def slow_remove(self: BlobCache, digests: list[Digest]) -> None:
        original(self, digests)  # the files are gone...
        unlinked.set()
        release.wait(10)  # ...the rows not yet, when the close comes

    settings = proxy_settings(tmp_path, UPSTREAM)
    added = []
    async with open_services(settings) as services:
        cache = services.cache
        monkeypatch.setattr(BlobCache, "_remove_files", slow_remove)
        for n in range(3):
            if n == 2:
                cache.max_size = 0  # this admit sets an eviction off in the background
            data = b"blob %d" % n
            temp = cache.store.new_temp()
            temp.write_bytes(data)
            added.append(Digest.of(data))
            await cache.admit(temp, added[-1], len(data))
        await asyncio.to_thread(unlinked.wait, 10)
        assert unlinked.is_set()
    release.set()
    monkeypatch.setattr(BlobCache, "_remove_files", original)

    async with open_services(settings) as services:
        rows = await services.cache.index.blobs.sizes()
        orphans = [d for d in added if str(d) in rows and services.cache.size(d) is None]
        assert orphans == [], f"rows without files after start-up: {orphans}"
