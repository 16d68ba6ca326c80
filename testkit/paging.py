"""Follow a listing's ``Link: <...>; rel="next"`` pages through the proxy to the end.

    items, links = follow_pages(proxy.url, "/v2/x/tags/list", {"n": "3"}, lambda b: b["tags"])

Each page must be a 200 and each Link the proxy's own path (``/v2/...``), never
upstream's; more than ``limit`` pages is a failure (a Link that loops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx


def follow_pages(
    base: str,
    path: str,
    params: dict[str, str],
    items: Callable[[Any], list[str]],
    limit: int = 50,
) -> tuple[list[str], list[str]]:
    """Every page's ``items(json)``, in order, and the Links followed to get them."""
    found: list[str] = []
    links: list[str] = []
    with httpx.Client(base_url=base, timeout=30) as http:
        answer = http.get(path, params=params)
        for _ in range(limit):
            assert answer.status_code == 200, (answer.request.url, answer.text)
            found += items(answer.json())
            link = answer.headers.get("link")
            if link is None:
                return found, links
            assert link.endswith('>; rel="next"'), link
            target = link[1 : link.index(">")]
            assert target.startswith("/v2/"), link  # the proxy's, never upstream's
            links.append(target)
            answer = http.get(target)
    raise AssertionError(f"more than {limit} pages: {links[-3:]}")
