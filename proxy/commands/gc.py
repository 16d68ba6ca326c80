"""``gar-proxy gc``: expire what was unread for ``cache.max_age`` (when set), then evict
least recently used blobs down to the size cap, now."""

from __future__ import annotations

from proxy.commands.progress import Progress, Say
from proxy.human import human_size
from proxy.services.container import Services


async def run(services: Services, say: Say) -> int:
    if services.settings.cache.max_age > 0:
        blobs, manifests = await services.cache.expire(services.settings.cache.max_age)
        say(f"expired {blobs} blobs and {manifests} manifests (cache.max_age)")
    cap = services.settings.cache.max_size
    with Progress.for_output(say) as progress:
        progress.task("evicting", total=None)  # a spinner: eviction is one batch
        removed, freed = await services.cache.evict()
    say(
        f"evicted {removed} blobs, freed {human_size(freed)}; "
        f"{human_size(services.index.blobs.total_bytes)} cached (cap {human_size(cap)})"
    )
    return 0
