"""Bytes held in unfinished uploads, per identity, against ``server.max_upload_bytes_per_identity``.

Sessions are bounded in number, but one identity could still spool without bound (many
large ``PATCH``es it never finishes) until the cache disk reaches ``cache.min_free``, and
then nobody's push or fill finds room. So each identity's spools together hold at most
the cap. The count is of bytes on disk in open sessions' spools: each ``Spool`` takes
from its owner's ``Account`` before it writes a byte and gives back what it cuts off, loses
or hands to the cache. A session found on disk after a restart counts from start-up,
before anyone touches it (``rest``), at its file's size, until it is resumed (then its
spool counts), ends or expires.

Past the cap a request is refused before its bytes are taken: at once when its
``Content-Length`` says so, else at the piece that would pass it (that request's bytes
are rolled back; what earlier requests stored stays). The answer is 429
``TOOMANYREQUESTS`` with ``Retry-After``, as for too many sessions (room comes back as
pushes finish); a single body larger than the whole cap can never fit and is 413
``SIZE_INVALID``. Without client auth every client is the one identity ``anonymous``
(sessions are owned by identity, not address): the cap then bounds all spooled bytes.

>>> ledger = UploadBytes(100)
>>> ledger.account("ci").take(60)
>>> ledger.check("ci", 50)
Traceback (most recent call last):
...
proxy.oci.errors.RegistryError: ci holds 60 bytes in unfinished uploads; 50 bytes more ...
>>> ledger.check("ops", 50) is None  # another identity's allowance is its own
True
>>> ledger.account("ci").give(60); ledger.held("ci")
0
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from proxy.human import human_size
from proxy.oci.errors import ErrorCode, RegistryError

log = logging.getLogger("gar_proxy.uploads")
SETTING = "server.max_upload_bytes_per_identity"


@dataclass(frozen=True)
class UploadLimits:
    """Sessions open at once (``server.max_upload_sessions``), per identity
    (``server.max_upload_sessions_per_identity``): each holds a row, a spool file and an
    upstream session until it ends or goes untouched for ``UPLOAD_TTL``; and the bytes
    one identity's spools hold (``server.max_upload_bytes_per_identity``, 0: no cap)."""

    total: int = 4096
    per_owner: int = 512
    bytes_per_owner: int = 20 * 1024**3


@dataclass(frozen=True)
class Account:
    """One identity's allowance, as its sessions' spools use it (``upload_store.Allowance``)."""

    ledger: UploadBytes
    owner: str

    def take(self, size: int, *, own: int = 0) -> None:
        self.ledger.take(self.owner, size, own=own)

    def give(self, size: int) -> None:
        self.ledger.give(self.owner, size)


@dataclass(frozen=True)
class _Resting:
    """A session found on disk at start-up and not resumed yet."""

    owner: str
    size: int
    updated: float


class UploadBytes:
    """``cap`` bytes per identity (0: no cap) held in open sessions' spools."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[str, int] = {}
        self._resting: dict[str, _Resting] = {}

    def account(self, owner: str) -> Account:
        return Account(self, owner)

    def held(self, owner: str) -> int:
        return self._held.get(owner, 0)

    def check(self, owner: str, size: int | None, *, own: int = 0) -> None:
        """Refuse, before a byte of it is read, a body of ``size`` (going into a session
        that holds ``own`` bytes already) that would not fit."""
        if self.cap and size:
            self._refuse(owner, size, own)

    def take(self, owner: str, size: int, *, own: int = 0) -> None:
        """``size`` more bytes held by ``owner`` in a session holding ``own``; refused
        past the cap (nothing taken)."""
        if self.cap and size > 0:
            self._refuse(owner, size, own)
        self._held[owner] = self.held(owner) + size

    def _refuse(self, owner: str, size: int, own: int) -> None:
        if own + size > self.cap:  # this upload alone: no wait makes it fit
            message = (
                f"an upload of {human_size(own + size)} or more is over {SETTING} "
                f"({human_size(self.cap)}): no blob larger than that can be pushed here"
            )
            log.warning("upload refused for %s: %s", owner, message)
            raise RegistryError(ErrorCode.TOO_LARGE, message)
        if self.held(owner) + size > self.cap:
            message = (
                f"{owner} holds {human_size(self.held(owner))} in unfinished uploads; "
                f"{human_size(size)} more would pass {SETTING} ({human_size(self.cap)}): "
                "finish or cancel some"
            )
            log.warning("upload refused: %s", message)
            raise RegistryError(ErrorCode.TOOMANYREQUESTS, message, headers={"Retry-After": "60"})

    def give(self, owner: str, size: int) -> None:
        left = self.held(owner) - size
        if left > 0:
            self._held[owner] = left
        else:
            self._held.pop(owner, None)

    # --- sessions found at start-up --------------------------------------------------------

    def rest(self, upload_id: str, owner: str, size: int, updated: float) -> None:
        """A session on disk that nobody has resumed since start-up: it counts."""
        self.wake(upload_id)
        self._resting[upload_id] = _Resting(owner, size, updated)
        self._held[owner] = self.held(owner) + size

    def wake(self, upload_id: str) -> None:
        """The session is resumed (its spool counts from now) or gone: stop counting it."""
        resting = self._resting.pop(upload_id, None)
        if resting is not None:
            self.give(resting.owner, resting.size)

    def resting(self, owner: str | None = None) -> int:
        """Sessions found at start-up and not resumed (``owner``'s, or everyone's)."""
        return sum(1 for r in self._resting.values() if owner is None or r.owner == owner)

    def stale(self, cutoff: float) -> list[str]:
        """Resting sessions untouched since ``cutoff``, no longer counted."""
        gone = [i for i, resting in self._resting.items() if resting.updated < cutoff]
        for upload_id in gone:
            self.wake(upload_id)
        return gone
