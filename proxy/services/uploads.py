"""Blob uploads through the proxy: sessions of its own, mapped onto upstream's.

The client sees ``/v2/<name>/blobs/uploads/<id>`` on the proxy; behind it is one
upstream session whose URL (it changes after every chunk) is kept in SQLite with the
offset upstream confirmed, so a restarted proxy carries on where it was.

Chunk bodies stream to upstream as they arrive, never held whole; on the way they are
hashed and teed to disk (``proxy.cache.uploads``) so a blob whose digest checks out at
the final PUT is cached at once. Upstream verifies the digest too and is the authority:
its refusal (``DIGEST_INVALID``) is passed on and nothing is cached; a blob it accepts
is cached only when the proxy's own hash agrees.

After a failure part-way through a chunk, or a 416 from upstream, the proxy asks
upstream for its offset (``GET`` on the session) and re-aligns its tee with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import httpx

from proxy.cache.blobs import BlobCache
from proxy.cache.uploads import UPLOAD_TTL, UploadFiles, UploadRow, UploadTable
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.upload_session import (
    UPLOAD_ID,
    Chunk,
    Flow,
    Session,
    expected_length,
    out_of_range,
    session_path,
    unknown_upload,
    upstream_offset,
)
from proxy.upstream import errors
from proxy.upstream.client import Upstream

log = logging.getLogger("gar_proxy.uploads")


class UploadService:
    def __init__(
        self, upstream: Upstream, cache: BlobCache, table: UploadTable, files: UploadFiles
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.table = table
        self.files = files
        self._live: dict[str, Session] = {}
        self._restoring = asyncio.Lock()

    # --- starting and finding sessions ---------------------------------------------------

    async def start(self, repo: Repository, *, keep: bool = True) -> Session:
        self._forget_stale()
        response = await self.upstream.send("POST", repo, "/blobs/uploads/", write=True)
        if response.status_code != 202:
            raise errors.from_response(response, response.content)
        return await self.adopt(repo, response, keep=keep)

    async def adopt(self, repo: Repository, response: httpx.Response, *, keep: bool) -> Session:
        """Take over the upstream session a 202 answer opened."""
        location = response.headers.get("location")
        if not location:
            raise RegistryError(
                ErrorCode.UPSTREAM_UNAVAILABLE, "upstream opened an upload without a Location",
                status=502,
            )  # fmt: skip
        now = time.time()
        url = str(response.url.join(location))
        row = UploadRow(uuid.uuid4().hex, repo.path, repo.location, url, 0, now, now)
        await self.upload_path(row)  # refuse a session we could not address before using it
        await self.table.put(row)
        session = self._live[row.id] = Session(row, self.files.tee(row.id, keep=keep))
        minimum = response.headers.get("oci-chunk-min-length", "")
        session.chunk_min_length = int(minimum) if minimum.isdigit() else None
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
        if row is None or row.repo != repo.path or row.updated < time.time() - UPLOAD_TTL:
            raise unknown_upload(upload_id)
        session = Session(row, self.files.tee(upload_id, fresh=False))
        # Ask upstream where it stands (this also learns its auth before a streamed
        # chunk, which cannot be replayed) and rebuild the hash from the teed bytes.
        await self._resync(session, force=True)
        self._live[upload_id] = session
        log.info("upload %s restored at offset %d", upload_id, row.offset)
        return session

    def _forget_stale(self) -> None:
        cutoff = time.time() - UPLOAD_TTL
        for upload_id in [k for k, s in self._live.items() if s.row.updated < cutoff]:
            self._live.pop(upload_id).tee.pause()

    # --- chunks, progress, finish, cancel ------------------------------------------------

    async def append(self, session: Session, chunk: Chunk) -> None:
        """PATCH: one chunk (or the whole stream) on to upstream."""
        async with session.lock:
            response, flow = await self._send(session, "PATCH", chunk, {})
            if response.status_code != 202:
                raise await self._failed(session, response)
            session.row.offset += flow.received
            await self._align(session, response)
            if flow.limit is not None and flow.received != flow.limit:
                raise RegistryError(
                    ErrorCode.SIZE_INVALID,
                    f"chunk of {flow.received} bytes, but Content-Range announced {flow.limit}",
                    headers=session.headers(),
                )

    async def finish(self, session: Session, digest: Digest, chunk: Chunk) -> None:
        """PUT ``?digest=``, with or without a last chunk; caches the blob when verified."""
        async with session.lock:
            response, _ = await self._send(session, "PUT", chunk, {"digest": str(digest)})
            if response.status_code not in (201, 204):
                raise await self._failed(session, response)
            header = response.headers.get("docker-content-digest")
            if header and header != str(digest):
                log.warning("upstream stored %s as %s", digest, header)
            await self._close(session, digest)

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
            response = await self._upstream(session, "DELETE", write=True)
            await self._drop(session)
            if response.status_code not in (200, 202, 204, 404):
                raise errors.from_response(response, response.content)

    # --- the streaming itself ------------------------------------------------------------

    async def _send(
        self, session: Session, method: str, chunk: Chunk, params: dict[str, str]
    ) -> tuple[httpx.Response, Flow]:
        expected = expected_length(session, chunk)
        headers = {"Content-Type": mt.OCTET_STREAM}
        if chunk.length is not None:
            headers["Content-Length"] = str(chunk.length)
        if chunk.content_range is not None and expected:
            headers["Content-Range"] = f"{session.offset}-{session.offset + expected - 1}"
        flow = Flow(session.tee, expected)
        body = flow.through(chunk.body) if chunk.body is not None else None
        try:
            response = await self._upstream(session, method, headers, params, body)
        except Exception:
            await self._resync_quietly(session)
            raise
        finally:
            if body is not None:
                await body.aclose()
            session.tee.pause()
        return response, flow

    async def _upstream(
        self,
        session: Session,
        method: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: AsyncIterator[bytes] | None = None,
        *,
        write: bool = True,
    ) -> httpx.Response:
        path = await self.upload_path(session.row, params)
        return await self.upstream.send(
            method, session.row.repository, path, headers=headers, content=content, write=write
        )

    async def upload_path(self, row: UploadRow, params: dict[str, str] | None = None) -> str:
        return await session_path(self.upstream, row.repository, row.upstream_url, params)

    # --- keeping in step with upstream ---------------------------------------------------

    async def _align(
        self, session: Session, response: httpx.Response, *, force: bool = False
    ) -> None:
        """Follow upstream's answer: its new session URL, its offset, the tee cut to it."""
        location = response.headers.get("location")
        if location:
            session.row.upstream_url = str(response.url.join(location))
        confirmed = upstream_offset(response.headers.get("range"), session.offset)
        if confirmed != session.offset:
            log.warning("upload %s: upstream at %d, not %d", session.id, confirmed, session.offset)
        if force or confirmed != session.offset or session.tee.size != confirmed:
            session.row.offset = confirmed
            await session.tee.resume(confirmed)
        session.row.updated = time.time()
        await self.table.put(session.row)

    async def _resync(self, session: Session, *, force: bool = False) -> None:
        response = await self._upstream(session, "GET", write=False)
        if response.status_code == 404:
            await self._drop(session)
            raise unknown_upload(session.id)
        if response.status_code not in (200, 204):
            raise errors.from_response(response, response.content)
        await self._align(session, response, force=force)

    async def _resync_quietly(self, session: Session) -> None:
        try:
            await self._resync(session)
        except (RegistryError, OSError) as error:
            if getattr(error, "code", None) is not ErrorCode.BLOB_UPLOAD_UNKNOWN:
                log.warning(
                    "upload %s: could not ask upstream for its offset: %r", session.id, error
                )

    async def _failed(self, session: Session, response: httpx.Response) -> RegistryError:
        """The error to raise for a refused chunk or PUT, with the session re-aligned."""
        error = errors.from_response(
            response, response.content, not_found=ErrorCode.BLOB_UPLOAD_UNKNOWN
        )
        if response.status_code == 404:
            await self._drop(session)
            return error
        await self._resync_quietly(session)
        if response.status_code == 416:
            return out_of_range(session, "upstream refused the chunk's range")
        return error

    async def _close(self, session: Session, digest: Digest) -> None:
        """The upload is complete upstream: cache its bytes if they are what was promised."""
        self._live.pop(session.id, None)
        await self.table.delete(session.id)
        tee = session.tee
        if tee.keep and not tee.broken and await tee.matches(digest):
            await asyncio.to_thread(self.cache.store.commit, tee.path, digest)
            await self.cache.index.add_blob(digest, tee.size)
            if self.cache.index.total_bytes > self.cache.max_size:
                asyncio.get_running_loop().create_task(self.cache.evict())
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
            await (await self._upstream(session, "DELETE")).aclose()
        except RegistryError as error:
            log.info("upload %s: cancel upstream failed: %s", session.id, error.message)
        await self._drop(session)
