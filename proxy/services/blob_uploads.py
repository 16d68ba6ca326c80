"""Blob uploads through the proxy: sessions of its own, landing upstream as one write.

GAR takes one write per upload session (no chunked uploads: docs/GAR.md), and its
session URLs are opaque. So the client's session is the proxy's own
(``/v2/<name>/blobs/uploads/<id>``), its bytes are spooled once
(``proxy.cache.upload_store.Spool``), and upstream gets the blob in one write:

- the first ``PATCH`` at offset 0 without ``Content-Range`` (docker, podman, skopeo)
  streams to the open upstream session as it arrives (a ``PATCH``); a ``PUT`` without
  a body then commits it. The first byte reaches GAR before the client's last.
- ``POST ?digest=`` with a body, or a ``PUT`` with the body (containerd, oras), streams
  to the open session as that ``PUT``.
- chunks with ``Content-Range`` are spooled only; the ``PUT`` sends the spool (and its
  own body) to the open session.
- when an upstream write fails, or a first ``PATCH`` turns out not to be the whole
  blob, the final write goes to a fresh session from the spool (and the rest of the
  client's body); when a final write fails in a way a fresh session may get past, the
  proxy writes it again itself (``blob_copy.ATTEMPTS`` sessions in all).

A session is its opener's: another identity that may push the same repository finds
no such session (as with a made-up id). Sessions open at once are bounded, in all and
per identity (``UploadLimits``); past a bound a new one is 429 ``TOOMANYREQUESTS``; so
are the bytes one identity's sessions hold (``upload_bytes``).

A ``GET`` on the session reports what the proxy holds (the spool), so a client that
lost its connection resumes from there; a restarted proxy finds its rows and spools
(``upload_store``). 201 comes only once upstream stored the blob at the digest the
client named; the blob enters the cache when the proxy's own hash agrees.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from proxy.cache.blobs import BlobCache
from proxy.cache.upload_store import OPEN, SPENT, UPLOAD_TTL, UploadFiles, UploadRow, UploadTable
from proxy.clock import SYSTEM, Clock
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.blob_copy import check_stored
from proxy.services.negative import BLOB, NegativeCache
from proxy.services.upload_bytes import UploadBytes, UploadLimits
from proxy.services.upload_flow import Intake
from proxy.services.upload_landing import land, undo
from proxy.services.upload_session import (
    UPLOAD_ID,
    Chunk,
    Session,
    UploadState,
    check_span,
    unknown_upload,
)
from proxy.upstream.registry import Registry, UploadProgress

log = logging.getLogger("gar_proxy.uploads")
DROPS_SESSION = frozenset(
    {ErrorCode.DIGEST_INVALID, ErrorCode.UPSTREAM_CORRUPT, ErrorCode.CACHE_FULL}
)


class UploadService:
    def __init__(
        self,
        registry: Registry,
        cache: BlobCache,
        table: UploadTable,
        files: UploadFiles,
        clock: Clock = SYSTEM,
        missing: NegativeCache | None = None,
        limits: UploadLimits | None = None,
    ) -> None:
        self.missing = missing or NegativeCache(0, clock)
        self.limits = limits or UploadLimits()
        self.held = UploadBytes(self.limits.bytes_per_owner)
        self.registry = registry
        self.cache = cache
        self.table = table
        self.files = files
        self.clock = clock
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

    # --- starting and finding sessions ---------------------------------------------------

    async def start(self, repo: Repository, *, owner: str) -> Session:
        await self.make_room(owner)
        return await self.adopt(repo, await self.registry.start_upload(repo), owner=owner)

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
                await self._drop(session)
        for upload_id in self.held.stale(cutoff):
            await self._forget_resting(upload_id)

    async def _forget_resting(self, upload_id: str) -> None:
        """A session found at start-up that expired before anyone resumed it."""
        self.held.wake(upload_id)
        await self.table.delete(upload_id)
        self.files.remove(upload_id)

    def _alive(self, session: Session) -> None:
        """The session may have finished or been dropped while a request waited."""
        if self._live.get(session.id) is not session:
            raise unknown_upload(session.id)

    # --- chunks, progress, finish, cancel ------------------------------------------------

    async def append(self, session: Session, chunk: Chunk) -> UploadState:
        """PATCH: a chunk, or the whole blob streamed."""
        async with session.lock:
            self._alive(session)
            expected = check_span(session, chunk)
            if chunk.body is not None:
                self._room_for(session, chunk, expected)
                if expected is None and session.offset == 0 and session.upstream_open:
                    await self._write_through(session, chunk)
                else:
                    await self._spool(session, chunk, expected)
            await self._touch(session)
            return session.state()

    async def finish(self, session: Session, digest: Digest, chunk: Chunk) -> None:
        """PUT ``?digest=``, with or without a last chunk: the blob lands upstream in one
        write (or is committed, if it went up whole already) and enters the cache."""
        async with session.lock:
            self._alive(session)
            expected = check_span(session, chunk)
            repo = session.row.repository
            try:
                if chunk.body is None:
                    await self._check_complete(session, digest)  # before any upstream write
                else:
                    self._room_for(session, chunk, expected)
                stored = await land(self, session, digest, chunk, expected)
                await check_stored(self.registry, repo, digest, stored)
            except RegistryError as error:
                if error.code in DROPS_SESSION:
                    await self._drop(session, cancel=True)
                raise
            await self._close(session, digest)
            await self.cache.index.scopes.add(str(repo), digest)
        self.missing.forget(BLOB, str(repo), str(digest))  # it exists now

    async def monolithic(
        self, repo: Repository, digest: Digest, chunk: Chunk, *, owner: str
    ) -> None:
        """``POST ?digest=`` with a body: a session, and the body as its one write."""
        session = await self.start(repo, owner=owner)
        try:
            await self.finish(session, digest, chunk)
        except BaseException:
            await self.abandon(session)
            raise

    def _room_for(self, session: Session, chunk: Chunk, expected: int | None) -> None:
        """A body whose length is known is refused before a byte of it is read when
        its owner's spools cannot hold it (``upload_bytes``); others, at the piece."""
        owner = session.row.owner or ""
        self.held.check(owner, expected or chunk.length, own=session.offset)

    async def progress(self, session: Session) -> UploadState:
        """GET on a session: the bytes the proxy holds (nothing is asked upstream)."""
        async with session.lock:
            self._alive(session)
            return session.state()

    async def cancel(self, session: Session) -> None:
        async with session.lock:
            self._alive(session)
            await self._drop(session, cancel=True)

    async def abandon(self, session: Session) -> None:
        """Drop a session no client knows about (a failed monolithic upload)."""
        if self._live.get(session.id) is session:
            await self._drop(session, cancel=True)

    # --- the bytes -----------------------------------------------------------------------

    async def _write_through(self, session: Session, chunk: Chunk) -> None:
        """The first PATCH, from offset 0 without ``Content-Range``: it may be the whole
        blob, so it goes to the open upstream session as it arrives (that session's
        one write) as well as to the spool. If upstream fails, the client does not see
        it: the rest goes to the spool, and the final write to a fresh session."""
        row = session.row
        row.upstream = SPENT  # a crash mid-write leaves it so: never written to again
        await self.table.put(row)
        assert chunk.body is not None
        mark = session.spool.mark()
        intake = Intake(chunk.body, session.spool, upstream_too=True)
        try:
            progress = await self.registry.write_upload(
                row.repository, row.upstream_url, intake.pieces(), chunk.length
            )
        except RegistryError as error:
            if intake.failure is not None:  # the client left (what arrived is kept), or
                undo(session.spool, mark, intake.failure)  # its allowance ran out
                raise intake.failure from None
            log.warning(
                "upload %s: upstream did not take the streamed write (%s); the blob goes "
                "to a fresh upstream session when it is complete", session.id, error.code.wire,
            )  # fmt: skip
            await intake.drain()
        else:
            await intake.drain()  # nothing left, normally (HTTP/1.1 sends it all first)
            held = progress.offset(intake.received)
            if held == intake.received == session.offset and held > 0:
                row.upstream, row.upstream_url = held, progress.url
        finally:
            session.spool.pause()
        if session.spool.lost and row.upstream == SPENT:
            await self._drop(session, cancel=True)
            raise RegistryError(
                ErrorCode.CACHE_FULL,
                "no room on the cache disk to hold the upload, and upstream did not take "
                "it whole: push it again",
            )

    async def _spool(self, session: Session, chunk: Chunk, expected: int | None) -> None:
        """A chunk the proxy only keeps: it goes upstream with the final write."""
        if session.spool.lost:
            await self._drop(session, cancel=True)
            raise RegistryError(
                ErrorCode.CACHE_FULL, "the upload's bytes could not be kept: push it again"
            )
        assert chunk.body is not None
        mark = session.spool.mark()
        intake = Intake(chunk.body, session.spool, expected)
        try:
            await intake.drain()
        except RegistryError as error:
            if error.code is not ErrorCode.CLIENT_GONE:  # a refused chunk leaves no trace
                session.spool.rollback(mark)
            raise
        finally:
            session.spool.pause()

    async def _check_complete(self, session: Session, digest: Digest) -> None:
        spool = session.spool
        if spool.lost:
            if session.row.upstream != session.offset:
                await self._drop(session, cancel=True)
                raise RegistryError(
                    ErrorCode.CACHE_FULL, "the upload's bytes could not be kept: push it again"
                )
        elif not await spool.matches(digest):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"the {spool.size} bytes uploaded do not match {digest}",
                detail={"digest": str(digest)},
            )

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

    # --- ending ----------------------------------------------------------------------------

    async def _touch(self, session: Session) -> None:
        session.row.updated = self.clock.time()
        await self.table.put(session.row)

    async def _close(self, session: Session, digest: Digest) -> None:
        """Upstream has the blob: cache the spool if it is what was promised."""
        self._live.pop(session.id, None)
        await self.table.delete(session.id)
        spool = session.spool
        if not spool.lost and await spool.matches(digest):
            spool.hand_over()  # the cache's bytes now, not the uploader's
            await self.cache.admit(spool.path, digest, spool.size)
            return
        spool.discard()

    async def _drop(self, session: Session, *, cancel: bool = False) -> None:
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
