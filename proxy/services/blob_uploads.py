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

This module owns that write flow: what each request does with a session's bytes and
when its blob lands. The sessions themselves (each its opener's, their bounds in number
and bytes, what a restart left, their end) are ``upload_book.SessionBook``'s; the final
write is ``upload_landing``'s, a body's way in ``upload_flow``'s.

A ``GET`` on the session reports what the proxy holds (the spool), so a client that
lost its connection resumes from there; a restarted proxy finds its rows and spools
(``upload_store``). 201 comes only once upstream stored the blob at the digest the
client named; the blob enters the cache when the proxy's own hash agrees.
"""

from __future__ import annotations

import logging

from proxy.cache.blobs import BlobCache
from proxy.cache.upload_store import SPENT, UploadFiles, UploadTable
from proxy.clock import SYSTEM, Clock
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.blob_copy import check_stored
from proxy.services.negative import BLOB, NegativeCache
from proxy.services.upload_book import SessionBook
from proxy.services.upload_bytes import UploadLimits
from proxy.services.upload_flow import Intake
from proxy.services.upload_landing import land, undo
from proxy.services.upload_session import Chunk, Session, UploadState, check_span
from proxy.upstream.registry import Registry, UploadProgress

log = logging.getLogger("gar_proxy.uploads")
DROPS_SESSION = frozenset(
    {ErrorCode.DIGEST_INVALID, ErrorCode.UPSTREAM_CORRUPT, ErrorCode.CACHE_FULL}
)


class UploadService:
    """What routes and mounts call. The book's own operations pass through, so a caller
    sees one service; ``book`` is for the final write (``upload_landing``)."""

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
        self.book = SessionBook(registry, table, files, clock, self.limits)
        self.held = self.book.held
        self.registry = registry
        self.cache = cache
        self.table = table
        self.files = files
        self.clock = clock

    # --- the book's, passed through ------------------------------------------------------

    def open_sessions(self) -> int:
        return self.book.open_sessions()

    def live(self) -> list[Session]:
        """The sessions open in this process (for the status page)."""
        return self.book.live()

    def state_of(self, session: Session) -> UploadState | None:
        """What the client is told about ``session``, if it is still going."""
        return self.book.state_of(session)

    async def make_room(self, owner: str) -> None:
        await self.book.make_room(owner)

    async def adopt(self, repo: Repository, progress: UploadProgress, *, owner: str) -> Session:
        return await self.book.adopt(repo, progress, owner=owner)

    async def session(self, repo: Repository, upload_id: str, *, owner: str) -> Session:
        return await self.book.session(repo, upload_id, owner=owner)

    async def rest_found(self) -> None:
        await self.book.rest_found()

    async def start(self, repo: Repository, *, owner: str) -> Session:
        await self.book.make_room(owner)
        return await self.book.adopt(repo, await self.registry.start_upload(repo), owner=owner)

    # --- chunks, progress, finish, cancel ------------------------------------------------

    async def append(self, session: Session, chunk: Chunk) -> UploadState:
        """PATCH: a chunk, or the whole blob streamed."""
        async with session.lock:
            self.book.alive(session)
            expected = check_span(session, chunk)
            if chunk.body is not None:
                self._room_for(session, chunk, expected)
                if expected is None and session.offset == 0 and session.upstream_open:
                    await self._write_through(session, chunk)
                else:
                    await self._spool(session, chunk, expected)
            await self.book.touch(session)
            return session.state()

    async def finish(self, session: Session, digest: Digest, chunk: Chunk) -> None:
        """PUT ``?digest=``, with or without a last chunk: the blob lands upstream in one
        write (or is committed, if it went up whole already) and enters the cache."""
        async with session.lock:
            self.book.alive(session)
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
                    await self.book.drop(session, cancel=True)
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
            self.book.alive(session)
            return session.state()

    async def cancel(self, session: Session) -> None:
        async with session.lock:
            self.book.alive(session)
            await self.book.drop(session, cancel=True)

    async def abandon(self, session: Session) -> None:
        """Drop a session no client knows about (a failed monolithic upload)."""
        if self.book.is_live(session):
            await self.book.drop(session, cancel=True)

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
            await self.book.drop(session, cancel=True)
            raise RegistryError(
                ErrorCode.CACHE_FULL,
                "no room on the cache disk to hold the upload, and upstream did not take "
                "it whole: push it again",
            )

    async def _spool(self, session: Session, chunk: Chunk, expected: int | None) -> None:
        """A chunk the proxy only keeps: it goes upstream with the final write."""
        if session.spool.lost:
            await self.book.drop(session, cancel=True)
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
                await self.book.drop(session, cancel=True)
                raise RegistryError(
                    ErrorCode.CACHE_FULL, "the upload's bytes could not be kept: push it again"
                )
        elif not await spool.matches(digest):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"the {spool.size} bytes uploaded do not match {digest}",
                detail={"digest": str(digest)},
            )

    # --- ending ----------------------------------------------------------------------------

    async def _close(self, session: Session, digest: Digest) -> None:
        """Upstream has the blob: cache the spool if it is what was promised."""
        await self.book.end(session)
        spool = session.spool
        if not spool.lost and await spool.matches(digest):
            spool.hand_over()  # the cache's bytes now, not the uploader's
            await self.cache.admit(spool.path, digest, spool.size)
            return
        spool.discard()
