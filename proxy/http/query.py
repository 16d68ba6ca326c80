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

    @classmethod
    def parse(cls, query: bytes) -> Parameters:
        if not query:
            return EMPTY
        if len(query) > MAX_QUERY_BYTES:
            raise RegistryError(
                ErrorCode.QUERY_INVALID, f"query string over {MAX_QUERY_BYTES} bytes"
            )
        found: dict[str, str] = {}
        counts: dict[str, int] = {}
        text = query.decode("latin-1")
        for name, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
            field = FIELDS.get(name)
            if field is None:
                continue
            counts[name] = counts.get(name, 0) + 1
            found[field] = value
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            name = repeated[0]
            raise RegistryError(
                ErrorCode.QUERY_INVALID,
                f"query parameter {name!r} given {counts[name]} times; give it once",
                detail={"parameter": name},
            )
        n = found.get("n")
        if n and not _PAGE_SIZE.fullmatch(n):
            raise RegistryError(
                ErrorCode.PAGINATION_NUMBER_INVALID,
                f"n must be a number of 1 to 9 digits, got {n[:20]!r}",
            )
        return cls(**found)

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
