"""Remembered upstream 404s: "pull or build" probes and ``--cache-from`` checks ask for
tags and digests that do not exist, often many times a minute; within
``cache.negative_ttl`` the answer is given here instead of asking GAR again.

Only authoritative answers are kept (upstream said the manifest, blob or repository is
unknown), never an outage. A push through the proxy forgets what it makes exist.

>>> from proxy.clock import ManualClock
>>> clock = ManualClock()
>>> missing = NegativeCache(30, clock)
>>> missing.remember(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2")
>>> missing.known_missing(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2")
True
>>> clock.advance(30)
>>> missing.known_missing(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2")
False
"""

from __future__ import annotations

from collections import OrderedDict

from proxy.clock import SYSTEM, Clock
from proxy.oci.errors import ErrorCode, RegistryError

# Upstream codes that say "does not exist" rather than "could not tell".
MISSING = frozenset((ErrorCode.MANIFEST_UNKNOWN, ErrorCode.BLOB_UNKNOWN, ErrorCode.NAME_UNKNOWN))
# Bounded: a scanner probing random tags must not grow the process without limit.
MAX_ENTRIES = 10_000
MANIFEST, BLOB = "manifest", "blob"


def is_missing(error: RegistryError) -> bool:
    return error.code in MISSING


class NegativeCache:
    """(what, repository, tag or digest) -> when the upstream 404 stops counting; ``what``
    is ``MANIFEST`` or ``BLOB`` (one digest may be a missing manifest yet a known blob)."""

    def __init__(self, ttl: float, clock: Clock = SYSTEM) -> None:
        self.ttl = ttl
        self.clock = clock
        self._until: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def known_missing(self, what: str, repo: str, reference: str) -> bool:
        key = (what, repo, reference)
        until = self._until.get(key)
        if until is None:
            return False
        if until <= self.clock.monotonic():
            del self._until[key]
            return False
        return True

    def remember(self, what: str, repo: str, reference: str) -> None:
        if self.ttl <= 0:
            return
        key = (what, repo, reference)
        self._until.pop(key, None)
        self._until[key] = self.clock.monotonic() + self.ttl
        while len(self._until) > MAX_ENTRIES:
            self._until.popitem(last=False)

    def forget(self, what: str, repo: str, *references: str) -> None:
        for reference in references:
            self._until.pop((what, repo, reference), None)
