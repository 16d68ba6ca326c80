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

A referrers index is paged differently: the spec (``Listing Referrers``) says only that
a registry "MUST" send a ``Link`` with ``rel="next"`` when the descriptors do not fit
one answer, and names no parameter. So its next page is upstream's URL, opaque: the
proxy keeps upstream's query as it is and asks the same path with it. ``next_page``
reads that link against the URL that answered (RFC 8288 section 3.2: a relative target
resolves against it) and says whether it names the same place; ``cursor_link`` and
``cursor`` carry its query up to the service as a link relative to that place, and
``page_link`` writes the proxy's own.

>>> asked = "https://us-docker.pkg.dev/v2/p/r/i/referrers/sha256:ab"
>>> next_page('</v2/p/r/i/referrers/sha256%3Aab?c=x%2By>; rel="next"', asked)
NextPage(query=(('c', 'x+y'),), elsewhere=None)
>>> next_page('<https://evil.example/v2/p/r/i/referrers/sha256:ab?c=1>; rel="next"', asked)
NextPage(query=(), elsewhere='https://evil.example/v2/p/r/i/referrers/sha256:ab')
>>> next_page('<https://us-docker.pkg.dev:x/v2/p?c=1>; rel="next"', asked).elsewhere
'https://us-docker.pkg.dev:x/v2/p'
>>> cursor(cursor_link((("c", "x+y"),)))
(('c', 'x+y'),)
>>> page_link("/v2/library/a/referrers/sha256:ab", {"ns": "docker.io"}, (("ns", "x"), ("c", "1")))
'</v2/library/a/referrers/sha256:ab?ns=docker.io&c=1>; rel="next"'
>>> page_link("/v2/p/r/i/referrers/sha256:ab", {}, (("ns", "x"), ("c", "a+b")))
'</v2/p/r/i/referrers/sha256:ab?c=a%2Bb>; rel="next"'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urljoin, urlsplit

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


def _next_url(header: str | None) -> str | None:
    """The target of the ``rel="next"`` link in a ``Link`` header, as written."""
    for match in _LINK.finditer(header or ""):
        rels = {rel.lower() for found in _REL.findall(match.group(2)) for rel in found.split()}
        if "next" in rels:
            return match.group(1)
    return None


def _query(url: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def next_target(header: str | None) -> dict[str, str] | None:
    """The query parameters of the ``rel="next"`` link in a ``Link`` header (the first
    of each name), or None when it has no such link."""
    url = _next_url(header)
    if url is None:
        return None
    found: dict[str, str] = {}
    for name, value in _query(url):
        found.setdefault(name, value)
    return found


@dataclass(frozen=True)
class NextPage:
    """Upstream's next page: its query (names and values in order, percent-decoded)
    when it is the same place asked, else ``elsewhere``, where it points without its
    query (a cursor may be a credential: it is not for a log)."""

    query: tuple[tuple[str, str], ...]
    elsewhere: str | None = None


def next_page(header: str | None, asked: str) -> NextPage | None:
    """The ``rel="next"`` link of ``header`` read against ``asked``, the URL that
    answered; None when there is none, or it names no other page (no query)."""
    target = _next_url(header)
    if target is None:
        return None
    url = urlsplit(urljoin(asked, target))
    if _place(url) != _place(urlsplit(asked)):
        return NextPage((), f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path}")
    query = _query(url.geturl())
    return NextPage(query) if query else None


def _place(url: SplitResult) -> tuple[str, str | None, int | None, str] | None:
    """Scheme, host, port and path; None when the port is not a port (no place)."""
    try:
        return url.scheme, url.hostname, url.port, unquote(url.path)
    except ValueError:
        return None


def cursor_link(query: tuple[tuple[str, str], ...]) -> str:
    """A ``Link`` to the same place with ``query``: how upstream's next page is kept."""
    return f'<?{urlencode(query, quote_via=quote, safe="")}>; rel="next"'


def cursor(header: str | None) -> tuple[tuple[str, str], ...] | None:
    """The query of a ``cursor_link`` (a link relative to the place that answered);
    None for any other link."""
    url = _next_url(header)
    if url is None or not url.startswith("?"):
        return None
    return _query(url) or None


def page_link(path: str, keep: Mapping[str, str], query: tuple[tuple[str, str], ...]) -> str:
    """The proxy's ``Link`` to ``path`` with ``keep`` (the parameters that chose the
    repository) and then ``query`` less ``ns`` and any name ``keep`` has: only the
    client's choice of repository picks the next page's, never upstream's."""
    pairs = [*keep.items(), *((k, v) for k, v in query if k not in keep and k != "ns")]
    target = f"{quote(path, safe='/:@')}?{urlencode(pairs, quote_via=quote, safe='')}"
    return f'<{target}>; rel="next"'


def page_size(value: str | None) -> str | None:
    """``value`` when it is a page size the proxy would accept from a client, else None
    (an upstream's ``Link`` is not trusted to be well formed)."""
    return value if value is not None and _PAGE_SIZE.fullmatch(value) else None
