"""The ``Link: <...>; rel="next"`` of a paginated listing (tags, catalog), read and written.

The distribution spec (``Listing Tags``, end-8b) lets a registry end a page early when
it sends a ``Link`` to the next one, set "according to RFC5988 with the Relation Type
rel="next"", never with ``n=0``, and tells clients to prefer that ``Link`` over building
``last`` themselves. So the ``Link`` decides what a client reads next, and it must name
the same repository the page came from: every query parameter that chose it (``ns``,
containerd's source host, which maps the path's name onto a mirror's GAR repository)
goes into it beside ``n`` and ``last``, each percent-encoded.

>>> next_link("/v2/library/alpine/tags/list", {"ns": "docker.io"}, "2", "3.19")
'</v2/library/alpine/tags/list?ns=docker.io&n=2&last=3.19>; rel="next"'
>>> next_link("/v2/_catalog", {}, None, "p/r&x")
'</v2/_catalog?last=p%2Fr%26x>; rel="next"'
>>> next_target('<https://h/v2/p/r/i/tags/list?n=2&last=b>; rel="next"')
{'n': '2', 'last': 'b'}
>>> next_target('</x?last=a>; rel="prev", </y?n=1&last=c>; rel=next') == {"n": "1", "last": "c"}
True
>>> next_target('</x?last=a>; rel="prev"') is None
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

# One link-value of RFC 8288: <target> then ;-parameters up to the next link or the end.
# A target holds no ">" (RFC 3986 URIs cannot), and a parameter no "<".
_LINK = re.compile(r"<([^>]*)>((?:\s*;[^,<]*)*)")
_REL = re.compile(r"""(?:^|;)\s*rel\s*=\s*"?([^";]*)"?""", re.IGNORECASE)
# A page size as the query parser lets one through (proxy/http/query.py).
_PAGE_SIZE = re.compile(r"[0-9]{1,9}")


def next_link(path: str, keep: Mapping[str, str], n: str | None, last: str) -> str:
    """The ``Link`` header value to the page after ``last``: ``keep`` (the parameters
    that chose the repository) first, then ``n`` (omitted when None) and ``last``."""
    query = {**keep, **({"n": n} if n else {}), "last": last}
    target = f"{quote(path, safe='/:@')}?{urlencode(query, quote_via=quote, safe='')}"
    return f'<{target}>; rel="next"'


def next_target(header: str | None) -> dict[str, str] | None:
    """The query parameters of the ``rel="next"`` link in a ``Link`` header (the first
    of each name), or None when it has no such link."""
    for match in _LINK.finditer(header or ""):
        rels = {rel.lower() for found in _REL.findall(match.group(2)) for rel in found.split()}
        if "next" in rels:
            found: dict[str, str] = {}
            for name, value in parse_qsl(urlsplit(match.group(1)).query, keep_blank_values=True):
                found.setdefault(name, value)
            return found
    return None


def page_size(value: str | None) -> str | None:
    """``value`` when it is a page size the proxy would accept from a client, else None
    (an upstream's ``Link`` is not trusted to be well formed)."""
    return value if value is not None and _PAGE_SIZE.fullmatch(value) else None
