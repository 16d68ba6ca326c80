"""Remembered upstream 404s: "pull or build" probes and ``--cache-from`` checks ask for
tags and digests that do not exist, often many times a minute; within
``cache.negative_ttl`` the answer is given here instead of asking GAR again.

Only authoritative answers are kept (upstream said the manifest, blob or repository is
unknown, or GAR's IAM refused it "(or it may not exist)", its 404 for a principal with
repository-scoped grants: docs/GAR.md A7), never an outage. The answer is replayed in
upstream's words: the client reads the same code and message as from GAR itself. A
push through the proxy forgets what it makes exist.

>>> from proxy.clock import ManualClock
>>> clock = ManualClock()
>>> missing = NegativeCache(30, clock)
>>> missing.remember(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2")
>>> missing.known_missing(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2")
True
>>> clock.advance(30)
>>> missing.known_missing(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2")
False
>>> gone = RegistryError(ErrorCode.NAME_UNKNOWN, 'not found upstream: Repository "r" not found')
>>> missing.remember(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2", gone)
>>> missing.replay(MANIFEST, "us-docker.pkg.dev/p/r/app", "v2").message
'not found upstream: Repository "r" not found'
"""

from __future__ import annotations

from collections import OrderedDict

from proxy.clock import SYSTEM, Clock
from proxy.oci.errors import ErrorCode, RegistryError

# Upstream codes that say "does not exist" rather than "could not tell".
MISSING = frozenset((ErrorCode.MANIFEST_UNKNOWN, ErrorCode.BLOB_UNKNOWN, ErrorCode.NAME_UNKNOWN))
# GAR's words when IAM refuses before looking (docs/GAR.md A7): its "unknown to you".
MAY_NOT_EXIST = "(or it may not exist)"
# Bounded: a scanner probing random tags must not grow the process without limit.
MAX_ENTRIES = 10_000
MANIFEST, BLOB = "manifest", "blob"


def is_missing(error: RegistryError) -> bool:
    if error.code is ErrorCode.DENIED:
        return MAY_NOT_EXIST in error.message
    return error.code in MISSING


class NegativeCache:
    """(what, repository, tag or digest) -> when the upstream 404 stops counting; ``what``
    is ``MANIFEST`` or ``BLOB`` (one digest may be a missing manifest yet a known blob)."""

    def __init__(self, ttl: float, clock: Clock = SYSTEM) -> None:
        self.ttl = ttl
        self.clock = clock
        # key -> (monotonic time it stops counting, upstream's answer if it gave one)
        self._until: OrderedDict[tuple[str, str, str], tuple[float, RegistryError | None]] = (
            OrderedDict()
        )

    def known_missing(self, what: str, repo: str, reference: str) -> bool:
        key = (what, repo, reference)
        entry = self._until.get(key)
        if entry is None:
            return False
        if entry[0] <= self.clock.monotonic():
            del self._until[key]
            return False
        return True

    def replay(self, what: str, repo: str, reference: str) -> RegistryError | None:
        """Upstream's remembered answer, as a fresh error (code, message, detail)."""
        if not self.known_missing(what, repo, reference):
            return None
        said = self._until[(what, repo, reference)][1]
        if said is None:
            return None
        return RegistryError(said.code, said.message, detail=said.detail)

    def remember(
        self, what: str, repo: str, reference: str, error: RegistryError | None = None
    ) -> None:
        """``error``: upstream's answer, replayed as it was; None: a bare 404."""
        if self.ttl <= 0:
            return
        key = (what, repo, reference)
        self._until.pop(key, None)
        self._until[key] = (self.clock.monotonic() + self.ttl, error)
        while len(self._until) > MAX_ENTRIES:
            self._until.popitem(last=False)

    def forget(self, what: str, repo: str, *references: str) -> None:
        for reference in references:
            self._until.pop((what, repo, reference), None)
