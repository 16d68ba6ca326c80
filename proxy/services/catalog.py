"""``GET /v2/_catalog``: the repositories this cache has seen, paginated as the OCI
distribution spec says (``n``, ``last``, and a ``Link`` to the next page).

GAR's own catalog lists a whole project's repositories and needs broad rights; a
cache answers for what it holds, which is what ``docker``-side tooling wants to see.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from proxy.cache.catalog import repositories
from proxy.cache.index import CacheIndex
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.links import next_link

# Without ?n= the whole list, up to this many (distribution's default page is 100).
MAX_PAGE = 1000


@dataclass(frozen=True)
class CatalogPage:
    body: bytes
    headers: dict[str, str]


def _page_size(n: str | None) -> int:
    """``n`` as ``proxy.http.query`` let it through (1 to 9 digits), at most MAX_PAGE."""
    if not n:
        return MAX_PAGE
    if not n.isascii() or not n.isdigit() or len(n) > 9:  # a caller that skipped the parser
        raise RegistryError(
            ErrorCode.PAGINATION_NUMBER_INVALID, f"n must be a number, got {n[:20]!r}"
        )
    return min(int(n), MAX_PAGE)


async def catalog(
    index: CacheIndex,
    n: str | None,
    last: str | None,
    *,
    visible: Callable[[str], bool] | None = None,
) -> CatalogPage:
    """A page of the names ``visible`` lets through (all when None); pages are cut
    after the filter, so a page is full and its ``Link`` names a visible repository."""
    size = _page_size(n)
    names = [
        name
        for name in await repositories(index)
        if (not last or name > last) and (visible is None or visible(name))
    ]
    page = names[:size]
    headers = {}
    if len(names) > size and page:
        headers["Link"] = next_link("/v2/_catalog", {}, str(size), page[-1])
    return CatalogPage(json.dumps({"repositories": page}).encode(), headers)
