"""``gar-proxy gc``: expire what was unread for ``cache.max_age`` (when set), then evict
least recently used blobs down to the size cap, now."""

from __future__ import annotations

from collections.abc import Callable

from proxy.services.container import Services


async def run(services: Services, say: Callable[[str], None]) -> int:
    if services.settings.cache.max_age > 0:
        blobs, manifests = await services.cache.expire(services.settings.cache.max_age)
        say(f"expired {blobs} blobs and {manifests} manifests (cache.max_age)")
    removed, freed = await services.cache.evict()
    cap = services.settings.cache.max_size
    say(
        f"evicted {removed} blobs, freed {freed} bytes; "
        f"{services.index.total_bytes} bytes cached (cap {cap})"
    )
    return 0
