"""``gar-proxy verify``: re-hash every cached blob; remove the corrupt ones."""

from __future__ import annotations

from collections.abc import Callable

from proxy.services.container import Services


async def run(services: Services, say: Callable[[str], None]) -> int:
    corrupt = await services.cache.verify()
    for digest in corrupt:
        say(f"corrupt, removed: {digest}")
    say(f"verified the cache: {len(corrupt)} corrupt blobs removed")
    return 1 if corrupt else 0
