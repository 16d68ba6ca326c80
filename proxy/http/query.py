"""The query parameters the proxy acts on, parsed once per request.

The access check and the route must read the same value: with ``from=A&from=B`` a
check that reads the first and a route that reads the last disagree about which
repository a mount reads. So each parameter below is read by this one parser, into
one frozen value that both use; a parameter given twice is a 400 ``QUERY_INVALID``
(a registry has no meaning for two values, and guessing one is how the two readers
came apart). Parameters the proxy does not act on are left alone. A page size ``n``
is 1 to 9 ASCII digits (``str.isdigit`` takes ``²``, which ``int()`` refuses, and
``int()`` refuses more than 4,300 digits) or a 400 ``PAGINATION_NUMBER_INVALID``,
before a listing or upstream sees it.

>>> Parameters.parse(b"mount=sha256%3Aab&from=p%2Fr%2Fi").source
'p/r/i'
>>> Parameters.parse(b"").ns is None
True
>>> Parameters.parse(b"ns=docker.io&ns=ghcr.io")
Traceback (most recent call last):
...
proxy.oci.errors.RegistryError: query parameter 'ns' given 2 times; give it once
>>> Parameters.parse(b"n=%C2%B2")
Traceback (most recent call last):
...
proxy.oci.errors.RegistryError: n must be a number of 1 to 9 digits, got '²'

A route that passes its query upstream (a referrers page: upstream's cursor is opaque,
``proxy.oci.links``) acts on every parameter, so ``passed_on`` holds each of those to
the same rule:

>>> Parameters.parse(b"ns=docker.io&artifactType=a%2Fb&c=1").passed_on()
{'artifactType': 'a/b', 'c': '1'}
>>> Parameters.parse(b"c=1&c=2").passed_on()
Traceback (most recent call last):
...
proxy.oci.errors.RegistryError: query parameter 'c' given 2 times; give it once
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from proxy.oci.errors import ErrorCode, RegistryError

# Query string name -> field. ``from`` is a keyword, hence ``source``.
FIELDS = {
    "ns": "ns",
    "mount": "mount",
    "from": "source",
    "digest": "digest",
    "n": "n",
    "last": "last",
    "artifactType": "artifact_type",
    "wait": "wait",
    "blobs": "blobs",
}
# More bytes of query than any client sends (a digest, a name of 255, a mount's from):
# refused before parsing, so a megabyte of "&&&" costs nothing.
MAX_QUERY_BYTES = 8192
# A page size: no listing is longer, and int() of it costs nothing.
_PAGE_SIZE = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class Parameters:
    """Each value as the client sent it, percent-decoded; None when absent."""

    ns: str | None = None
    mount: str | None = None
    source: str | None = None  # ``from``
    digest: str | None = None
    n: str | None = None
    last: str | None = None
    artifact_type: str | None = None
    wait: str | None = None
    blobs: str | None = None  # purge's ?blobs=true
    # Every parameter, in order, as sent: for a route that passes them on.
    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, query: bytes) -> Parameters:
        if not query:
            return EMPTY
        if len(query) > MAX_QUERY_BYTES:
            raise RegistryError(
                ErrorCode.QUERY_INVALID, f"query string over {MAX_QUERY_BYTES} bytes"
            )
        found: dict[str, str] = {}
        text = query.decode("latin-1")
        pairs = tuple(parse_qsl(text, keep_blank_values=True, errors="replace"))
        for name, value in pairs:
            field = FIELDS.get(name)
            if field is not None:
                found[field] = value
        _once([name for name, _ in pairs if name in FIELDS])
        n = found.get("n")
        if n and not _PAGE_SIZE.fullmatch(n):
            raise RegistryError(
                ErrorCode.PAGINATION_NUMBER_INVALID,
                f"n must be a number of 1 to 9 digits, got {n[:20]!r}",
            )
        return cls(**found, pairs=pairs)

    def passed_on(self) -> dict[str, str]:
        """Every parameter but ``ns`` (which chose the repository), in the order sent,
        for a route that passes its query upstream; each once, or a 400."""
        _once([name for name, _ in self.pairs])
        return {name: value for name, value in self.pairs if name != "ns"}

    @property
    def namespace(self) -> str | None:
        """``ns`` when it says something (an empty one says nothing)."""
        return self.ns or None

    @property
    def repository_choice(self) -> dict[str, str]:
        """The parameters that chose the repository (with the path's name), for a
        ``Link`` to another page of the same listing to carry."""
        return {"ns": self.ns} if self.ns else {}


EMPTY = Parameters()


def _once(names: list[str]) -> None:
    """A parameter the proxy acts on, given twice, is a 400 naming the first such."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        name = repeated[0]
        shown = name[:64]  # a passed-on name is the client's: up to the query's size
        raise RegistryError(
            ErrorCode.QUERY_INVALID,
            f"query parameter {shown!r} given {counts[name]} times; give it once",
            detail={"parameter": shown},
        )
