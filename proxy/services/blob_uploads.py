"""Blob uploads through the proxy: sessions of its own, mapped onto upstream's.

The client sees ``/v2/<name>/blobs/uploads/<id>`` on the proxy; behind it is one
upstream session whose URL (it changes after every chunk) is kept in SQLite with the
offset upstream confirmed, so a restarted proxy carries on where it was.

Chunk bodies stream to upstream as they arrive, never held whole; on the way they are
hashed and teed to disk (``proxy.cache.upload_store``) so a blob whose digest checks out at
the final PUT is cached at once. Upstream verifies the digest too and is the authority:
its refusal (``DIGEST_INVALID``) is passed on and nothing is cached; a blob it accepts
is cached only when the proxy's own hash agrees.

After a failure part-way through a chunk, or a 416 from upstream, the proxy asks
upstream for its offset (``GET`` on the session) and re-aligns its tee with it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from proxy.cache.blobs import BlobCache
from proxy.cache.upload_store import UPLOAD_TTL, UploadFiles, UploadRow, UploadTable
from proxy.clock import SYSTEM, Clock
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.negative import BLOB, NegativeCache
from proxy.services.upload_session import (
    UPLOAD_ID,
    Chunk,
    Flow,
    Session,
    expected_length,
    out_of_range,
    unknown_upload,
)
from proxy.upstream.registry import Registry, UploadProgress

log = logging.getLogger("gar_proxy.uploads")


class UploadService:
    def __init__(
        self,
        registry: Registry,
        cache: BlobCache,
        table: UploadTable,
        files: UploadFiles,
        clock: Clock = SYSTEM,
        missing: NegativeCache | None = None,
    ) -> None:
        self.missing = missing or NegativeCache(0, clock)
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

    # --- starting and finding sessions ---------------------------------------------------

    async def start(self, repo: Repository, *, keep: bool = True) -> Session:
        self._forget_stale()
        return await self.adopt(repo, await self.registry.start_upload(repo), keep=keep)

    async def adopt(self, repo: Repository, progress: UploadProgress, *, keep: bool) -> Session:
        """Take over an upstream session that a POST (or a refused mount) opened."""
        now = self.clock.time()
        row = UploadRow(uuid.uuid4().hex, repo.path, repo.location, progress.url, 0, now, now)
        # Refuse a session we could not address before using it.
        await self.registry.session_path(repo, progress.url)
        await self.table.put(row)
        session = self._live[row.id] = Session(row, self.files.tee(row.id, keep=keep))
        session.chunk_min_length = progress.chunk_min_length
        return session

    async def session(self, repo: Repository, upload_id: str) -> Session:
        """The session ``upload_id`` of ``repo``, restored from SQLite after a restart."""
        if not UPLOAD_ID.fullmatch(upload_id):
            raise unknown_upload(upload_id)
        session = self._live.get(upload_id)
        if session is None:
            async with self._restoring:
                session = self._live.get(upload_id) or await self._restore(repo, upload_id)
        if session.row.repo != repo.path:
            raise unknown_upload(upload_id)
        return session

    async def _restore(self, repo: Repository, upload_id: str) -> Session:
        row = await self.table.get(upload_id)
        if row is None or row.repo != repo.path or row.updated < self.clock.time() - UPLOAD_TTL:
            raise unknown_upload(upload_id)
        session = Session(row, self.files.tee(upload_id, fresh=False))
        # Ask upstream where it stands (this also learns its auth before a streamed
        # chunk, which cannot be replayed) and rebuild the hash from the teed bytes.
        await self._resync(session, force=True)
        self._live[upload_id] = session
        log.info("upload %s restored at offset %d", upload_id, row.offset)
        return session

    def _forget_stale(self) -> None:
        cutoff = self.clock.time() - UPLOAD_TTL
        for upload_id in [k for k, s in self._live.items() if s.row.updated < cutoff]:
            self._live.pop(upload_id).tee.pause()

    # --- chunks, progress, finish, cancel ------------------------------------------------

    async def append(self, session: Session, chunk: Chunk) -> None:
        """PATCH: one chunk (or the whole stream) on to upstream."""
        async with session.lock:
            progress, flow = await self._send(session, chunk, None)
            assert isinstance(progress, UploadProgress)
            session.row.offset += flow.received
            await self._align(session, progress)
            if flow.limit is not None and flow.received != flow.limit:
                raise RegistryError(
                    ErrorCode.SIZE_INVALID,
                    f"chunk of {flow.received} bytes, but Content-Range announced {flow.limit}",
                    headers=session.headers(),
                )

    async def finish(self, session: Session, digest: Digest, chunk: Chunk) -> None:
        """PUT ``?digest=``, with or without a last chunk; caches the blob when verified."""
        async with session.lock:
            stored, _ = await self._send(session, chunk, digest)
            repo = session.row.repository
            if stored is not None and stored != digest:
                # 201 only for what upstream holds at the digest the client named.
                if await self.registry.stat_blob(repo, digest) is None:
                    await self._drop(session)
                    raise RegistryError(
                        ErrorCode.UPSTREAM_CORRUPT,
                        f"upstream stored the blob as {stored}, not {digest}; "
                        f"{repo.path}@{digest} does not exist upstream",
                    )
                log.info("upstream reported %s for %s, which it also holds", stored, digest)
            await self._close(session, digest)
            await self.cache.index.scopes.add(str(repo), digest)
        self.missing.forget(BLOB, str(session.row.repository), str(digest))  # it exists now

    async def monolithic(self, repo: Repository, digest: Digest, chunk: Chunk) -> None:
        """``POST ?digest=`` with a body: a session and its PUT, on every registry alike."""
        session = await self.start(repo)
        try:
            await self.finish(session, digest, chunk)
        except Exception:
            await self.abandon(session)
            raise

    async def progress(self, session: Session) -> None:
        """GET on a session: upstream's offset, which the tee then matches."""
        async with session.lock:
            await self._resync(session)

    async def cancel(self, session: Session) -> None:
        async with session.lock:
            try:
                await self.registry.cancel_upload(session.row.repository, session.row.upstream_url)
            finally:
                await self._drop(session)

    # --- the streaming itself ------------------------------------------------------------

    async def _send(
        self, session: Session, chunk: Chunk, digest: Digest | None
    ) -> tuple[UploadProgress | Digest | None, Flow]:
        """A PATCH (no ``digest``) or the final PUT, streamed through a ``Flow``."""
        expected = expected_length(session, chunk)
        headers = {"Content-Type": mt.OCTET_STREAM}
        if chunk.length is not None:
            headers["Content-Length"] = str(chunk.length)
        if chunk.content_range is not None and expected:
            headers["Content-Range"] = f"{session.offset}-{session.offset + expected - 1}"
        flow = Flow(session.tee, expected)
        body = flow.through(chunk.body) if chunk.body is not None else None
        repo, url = session.row.repository, session.row.upstream_url
        try:
            if digest is None:
                return await self.registry.patch_upload(repo, url, body, headers), flow
            return await self.registry.finish_upload(repo, url, digest, body, headers), flow
        except RegistryError as error:
            raise await self._failed(session, error) from None
        except Exception:
            await self._resync_quietly(session)
            raise
        finally:
            if body is not None:
                await body.aclose()
            session.tee.pause()

    # --- keeping in step with upstream ---------------------------------------------------

    async def _align(
        self, session: Session, progress: UploadProgress, *, force: bool = False
    ) -> None:
        """Follow upstream's answer: its new session URL, its offset, the tee cut to it."""
        session.row.upstream_url = progress.url
        confirmed = progress.offset(session.offset)
        if confirmed != session.offset:
            log.warning("upload %s: upstream at %d, not %d", session.id, confirmed, session.offset)
        if force or confirmed != session.offset or session.tee.size != confirmed:
            session.row.offset = confirmed
            await session.tee.resume(confirmed)
        session.row.updated = self.clock.time()
        await self.table.put(session.row)

    async def _resync(self, session: Session, *, force: bool = False) -> None:
        progress = await self.registry.upload_status(
            session.row.repository, session.row.upstream_url
        )
        if progress is None:
            await self._drop(session)
            raise unknown_upload(session.id)
        await self._align(session, progress, force=force)

    async def _resync_quietly(self, session: Session) -> None:
        try:
            await self._resync(session)
        except (RegistryError, OSError) as error:
            if getattr(error, "code", None) is not ErrorCode.BLOB_UPLOAD_UNKNOWN:
                log.warning(
                    "upload %s: could not ask upstream for its offset: %r", session.id, error
                )

    async def _failed(self, session: Session, error: RegistryError) -> RegistryError:
        """The error to raise for a refused chunk or PUT, with the session re-aligned."""
        if error.status == 404:
            await self._drop(session)
            return error
        await self._resync_quietly(session)
        if error.code is ErrorCode.RANGE_INVALID:
            return out_of_range(session, "upstream refused the chunk's range")
        return error

    async def _close(self, session: Session, digest: Digest) -> None:
        """The upload is complete upstream: cache its bytes if they are what was promised."""
        self._live.pop(session.id, None)
        await self.table.delete(session.id)
        tee = session.tee
        if tee.keep and not tee.broken and await tee.matches(digest):
            await self.cache.admit(tee.path, digest, tee.size)
            return
        if tee.keep:
            log.warning(
                "upload %s of %s: kept bytes did not verify; not cached", session.id, digest
            )
        tee.discard()

    async def _drop(self, session: Session) -> None:
        self._live.pop(session.id, None)
        session.tee.discard()
        await self.table.delete(session.id)

    async def abandon(self, session: Session) -> None:
        """Cancel a session no client knows about (a failed monolithic upload or copy)."""
        if session.id not in self._live:
            return
        try:
            await self.registry.cancel_upload(session.row.repository, session.row.upstream_url)
        except RegistryError as error:
            log.info("upload %s: cancel upstream failed: %s", session.id, error.message)
        await self._drop(session)
