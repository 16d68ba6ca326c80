"""``gar-proxy ls [PREFIX] [--json]``: cached repositories, tags and their sizes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from proxy.cache.catalog import CachedTag, cached_tags
from proxy.services.container import Services

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(size: int) -> str:
    """Binary units, one decimal:

    >>> human_size(1536), human_size(12)
    ('1.5 KiB', '12 B')
    """
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(tags: list[CachedTag]) -> list[str]:
    """Aligned columns, a header first; sizes right-aligned so they compare by eye."""
    rows = [("REPOSITORY", "TAG", "DIGEST", "SIZE", "FETCHED")]
    for item in tags:
        fetched = time.strftime("%Y-%m-%d %H:%M", time.gmtime(item.fetched))
        rows.append((item.repository, item.tag, item.digest[:19], human_size(item.size), fetched))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
        f"{r[3]:>{widths[3]}}  {r[4]}"
        for r in rows
    ]


async def run(services: Services, prefix: str, as_json: bool, say: Callable[[str], None]) -> int:
    tags = await cached_tags(services.index, prefix)
    if as_json:
        say(json.dumps([
            {"repository": t.repository, "tag": t.tag, "digest": t.digest, "size": t.size,
             "fetched": t.fetched}
            for t in tags
        ], indent=2))  # fmt: skip
        return 0
    if not tags:
        say(f"nothing cached{' under ' + prefix if prefix else ''}")
        return 0
    for line in table(tags):
        say(line)
    return 0
