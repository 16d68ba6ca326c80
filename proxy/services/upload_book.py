"""The book of open upload sessions: who opened which, the bounds, restart recovery, ending.

``UploadService`` (``blob_uploads``) moves a session's bytes; this keeps the sessions
themselves. It owns:

- the sessions open in this process, each its opener's: another identity that may push
  the same repository finds no such session (as with a made-up id);
- the bounds: sessions open at once, in all and per identity (``UploadLimits``), past
  which a new one is 429 ``TOOMANYREQUESTS`` before anything is asked upstream; and
  the ledger of bytes each identity's spools hold (``upload_bytes``);
- restart recovery: sessions found on disk count against their owners (``rest_found``)
  until resumed (restored from SQLite and their spool), ended or expired (24 h
  untouched, ``UPLOAD_TTL``);
- a session's row (its upstream session renewed or spent, its last touch) and its end:
  dropped (spool discarded, row deleted, the upstream session cancelled if asked) or
  ended once upstream has the blob.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from proxy.cache.upload_store import OPEN, SPENT, UPLOAD_TTL, UploadFiles, UploadRow, UploadTable
from proxy.clock import Clock
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.upload_bytes import UploadBytes, UploadLimits
from proxy.services.upload_session import UPLOAD_ID, Session, UploadState, unknown_upload
from proxy.upstream.registry import Registry, UploadProgress

log = logging.getLogger("gar_proxy.uploads")


class SessionBook:
    def __init__(
        self,
        registry: Registry,
        table: UploadTable,
        files: UploadFiles,
        clock: Clock,
        limits: UploadLimits,
    ) -> None:
        self.registry = registry
        self.table = table
        self.files = files
        self.clock = clock
        self.limits = limits
        self.held = UploadBytes(limits.bytes_per_owner)
        self._live: dict[str, Session] = {}
        self._restoring = asyncio.Lock()

    def open_sessions(self) -> int:
        return len(self._live)

    def live(self) -> list[Session]:
        """The sessions open in this process (for the status page)."""
        return list(self._live.values())

    def state_of(self, session: Session) -> UploadState | None:
        """What the client is told about ``session``, if it is still going."""
        return session.state() if self._live.get(session.id) is session else None

    def is_live(self, session: Session) -> bool:
        return self._live.get(session.id) is session

    def alive(self, session: Session) -> None:
        """The session may have finished or been dropped while a request waited."""
        if self._live.get(session.id) is not session:
            raise unknown_upload(session.id)

    # --- opening -------------------------------------------------------------------------

    async def make_room(self, owner: str) -> None:
        """Before a new session for ``owner`` is opened upstream: forget stale ones,
        then refuse when the bounds are reached (nothing asked upstream)."""
        await self._forget_stale()
        open_now = len(self._live) + self.held.resting()  # resting: found at start-up
        if open_now >= self.limits.total:
            what = f"{open_now} upload sessions are open"
            raise self._too_many(what, "server.max_upload_sessions")
        mine = sum(1 for session in self._live.values() if session.row.owner == owner)
        mine += self.held.resting(owner)
        if mine >= self.limits.per_owner:
            what = f"{owner} has {mine} upload sessions open"
            raise self._too_many(what, "server.max_upload_sessions_per_identity")

    @staticmethod
    def _too_many(what: str, setting: str) -> RegistryError:
        log.warning("upload refused: %s (%s)", what, setting)
        return RegistryError(
            ErrorCode.TOOMANYREQUESTS,
            f"{what}: finish or cancel some (untouched sessions end after {UPLOAD_TTL / 3600:g} h)",
            headers={"Retry-After": "60"},
        )

    async def adopt(self, repo: Repository, progress: UploadProgress, *, owner: str) -> Session:
        """A session of ``owner`` over an upstream one a POST (or a refused mount) opened."""
        now = self.clock.time()
        row = UploadRow(
            uuid.uuid4().hex, repo.path, repo.location, progress.url, OPEN, now, now, owner
        )
        spool = self.files.spool(row.id, self.held.account(owner))
        await self.table.put(row)
        session = Session(row, spool, chunk_min_length=progress.chunk_min_length)
        self._live[row.id] = session
        return session

    # --- finding, and what a restart left ------------------------------------------------

    async def session(self, repo: Repository, upload_id: str, *, owner: str) -> Session:
        """The session ``upload_id`` of ``repo`` opened by ``owner``, restored from
        SQLite after a restart. Anyone else's, like an id never handed out, is unknown."""
        if not UPLOAD_ID.fullmatch(upload_id):
            raise unknown_upload(upload_id)
        session = self._live.get(upload_id)
        if session is None:
            async with self._restoring:
                session = self._live.get(upload_id) or await self._restore(repo, upload_id, owner)
        if session.row.repo != repo.path or session.row.owner != owner:
            raise unknown_upload(upload_id)
        return session

    async def _restore(self, repo: Repository, upload_id: str, owner: str) -> Session:
        row = await self.table.get(upload_id)
        if row is None or row.repo != repo.path or row.owner != owner:
            raise unknown_upload(upload_id)  # a row from before owners is nobody's
        if row.updated < self.clock.time() - UPLOAD_TTL:
            await self._forget_resting(upload_id)
            raise unknown_upload(upload_id)
        spool = await self.files.reopen(upload_id, self.held.account(owner))
        self.held.wake(upload_id)  # its spool counts it from here
        if spool is None:  # its bytes are gone: the session cannot go on
            await self.table.delete(upload_id)
            raise unknown_upload(upload_id)
        session = self._live[upload_id] = Session(row, spool)
        log.info("upload %s restored at offset %d", upload_id, spool.size)
        return session

    async def rest_found(self) -> None:
        """Start-up: the sessions on disk count against their owners' bytes (and
        sessions) before anyone resumes them."""
        for upload_id, owner, updated in await self.table.owners():
            self.held.rest(upload_id, owner, self.files.size(upload_id), updated)

    async def _forget_stale(self) -> None:
        cutoff = self.clock.time() - UPLOAD_TTL
        for session in [s for s in self._live.values() if s.row.updated < cutoff]:
            if not session.lock.locked():
                await self.drop(session)
        for upload_id in self.held.stale(cutoff):
            await self._forget_resting(upload_id)

    async def _forget_resting(self, upload_id: str) -> None:
        """A session found at start-up that expired before anyone resumed it."""
        self.held.wake(upload_id)
        await self.table.delete(upload_id)
        self.files.remove(upload_id)

    # --- the row: upstream session, last touch -------------------------------------------

    async def renew(self, session: Session) -> None:
        """A fresh upstream session for ``session`` (its old one given up)."""
        row = session.row
        if row.upstream != OPEN:
            await self._cancel_upstream(session)
        progress = await self.registry.start_upload(row.repository)
        row.upstream_url, row.upstream = progress.url, OPEN
        await self.table.put(row)

    async def spend(self, session: Session) -> None:
        """A write to the upstream session begins: it takes no other."""
        session.row.upstream = SPENT
        await self.table.put(session.row)

    async def touch(self, session: Session) -> None:
        session.row.updated = self.clock.time()
        await self.table.put(session.row)

    # --- ending --------------------------------------------------------------------------

    async def end(self, session: Session) -> None:
        """Upstream has the blob: the session is over (its spool is the caller's)."""
        self._live.pop(session.id, None)
        await self.table.delete(session.id)

    async def drop(self, session: Session, *, cancel: bool = False) -> None:
        self._live.pop(session.id, None)
        session.spool.discard()
        await self.table.delete(session.id)
        if cancel:
            await self._cancel_upstream(session)

    async def _cancel_upstream(self, session: Session) -> None:
        try:
            await self.registry.cancel_upload(session.row.repository, session.row.upstream_url)
        except RegistryError as error:  # it expires upstream anyway
            log.info("upload %s: cancelling upstream failed (%s)", session.id, error.code.wire)
