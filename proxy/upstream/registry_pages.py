"""Upstream's next page of a referrers index, kept only where upstream answered.

The spec names no parameter for a referrers page: its ``Link`` is upstream's URL,
opaque (``proxy.oci.links``). The proxy can follow it only by asking the same path
with that query, so a link to the place that answered (its host and path, however it
is written: relative, absolute, percent-encoded) is kept as a ``cursor_link`` (its
query alone), and the service writes the proxy's own from it. A link anywhere else
would send a client out of the proxy, or the proxy's credentials to another host: it
is dropped, and logged once per host, without its query (a cursor may be a credential).
"""

from __future__ import annotations

import logging

from proxy.oci import links

log = logging.getLogger("gar_proxy.upstream")
SAID_LIMIT = 1024  # hosts remembered as logged


class NextPages:
    def __init__(self) -> None:
        self._said: set[str] = set()  # hosts whose links elsewhere were logged

    def keep(self, headers: dict[str, str], asked: str) -> None:
        """Replace ``headers["link"]`` by its ``cursor_link``, or drop it."""
        page = links.next_page(headers.pop("link"), asked)
        if page is None:
            return
        if page.elsewhere is None:
            headers["link"] = links.cursor_link(page.query)
            return
        origin = page.elsewhere.split("/")[2]
        if origin in self._said:
            return
        if len(self._said) >= SAID_LIMIT:
            self._said.clear()
        self._said.add(origin)
        log.warning(
            "upstream's next page of referrers is at %s, not where it answered: dropped "
            "(the client gets this page only)", page.elsewhere,
        )  # fmt: skip
