"""``gar-proxy verify``: re-hash every cached blob; remove the corrupt ones."""

from __future__ import annotations

from proxy.commands.progress import Progress, Say
from proxy.human import human_size
from proxy.services.container import Services


async def run(services: Services, say: Say) -> int:
    checked = checked_bytes = 0
    with Progress.for_output(say) as progress:
        task = progress.task("verifying", total=services.index.blobs.total_bytes or None)

        def on_blob(size: int) -> None:
            nonlocal checked, checked_bytes
            checked, checked_bytes = checked + 1, checked_bytes + size
            task.advance(size)

        corrupt = await services.cache.verify(on_blob)
        for digest in corrupt:
            progress.say(f"corrupt, removed: {digest}")
    say(
        f"verified the cache: checked {checked} blobs ({human_size(checked_bytes)}), "
        f"{len(corrupt)} corrupt blobs removed"
    )
    return 1 if corrupt else 0
