"""``gar-proxy gc``: evict least recently used blobs down to the size cap, now."""

from __future__ import annotations

from collections.abc import Callable

from proxy.services.container import Services


async def run(services: Services, say: Callable[[str], None]) -> int:
    removed, freed = await services.cache.evict()
    cap = services.settings.cache.max_size
    say(
        f"evicted {removed} blobs, freed {freed} bytes; "
        f"{services.index.total_bytes} bytes cached (cap {cap})"
    )
    return 0
