"""The final write of an upload: the whole blob, to one upstream session, once.

Called by ``UploadService.finish`` with the session locked. In order:

1. The blob went up whole already (a first ``PATCH`` streamed through and upstream
   holds every byte the proxy holds) and the ``PUT`` has no body: commit it, a ``PUT``
   without a body, as docker does against GAR.
2. Otherwise one ``PUT ?digest=`` carries the spool and then the client's own body
   (spooled as it passes) to the open upstream session, or to a fresh one if that was
   written to already. The last byte waits until the bytes match the digest
   (``upload_flow.gated``), so a wrong blob is never committed.
3. When that write fails in a way a fresh session may get past (upstream cut it,
   forgot the session, 5xx), the rest of the client's body goes to the spool and the
   whole spool is written again to a fresh session, ``ATTEMPTS`` sessions in all.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from proxy.cache.upload_store import Mark, Spool
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.services.blob_copy import ATTEMPTS
from proxy.services.upload_flow import FRESH_MAY_HELP, Intake, chained, gated
from proxy.services.upload_session import Chunk, Session

if TYPE_CHECKING:
    from proxy.services.blob_uploads import UploadService

log = logging.getLogger("gar_proxy.uploads")


async def land(
    service: UploadService, session: Session, digest: Digest, chunk: Chunk, expected: int | None
) -> Digest | None:
    """Land the blob upstream; returns the digest upstream says it stored."""
    row, spool = session.row, session.spool
    repo, registry = row.repository, service.registry
    whole_upstream = row.upstream > 0 and row.upstream == session.offset
    if spool.lost and (chunk.body is not None or not whole_upstream):
        raise RegistryError(
            ErrorCode.CACHE_FULL, "the upload's bytes could not be kept on disk: push it again"
        )
    if chunk.body is None and whole_upstream:
        try:
            return await registry.commit_upload(repo, row.upstream_url, digest, None, None)
        except RegistryError as error:
            if error.code not in FRESH_MAY_HELP or spool.lost:
                raise
            _again(session, error)
    mark = spool.mark()
    intake = None if chunk.body is None else Intake(chunk.body, spool, expected, upstream_too=True)
    for attempt in range(1, ATTEMPTS + 1):
        if not session.upstream_open:
            await service.book.renew(session)
        await service.book.spend(session)
        body, length = _body(spool, mark, intake, chunk.length, _matches(spool, digest))
        try:
            return await registry.commit_upload(repo, row.upstream_url, digest, body, length)
        except Exception as error:
            if intake is not None and intake.failure is not None:
                undo(spool, mark, intake.failure)
                raise intake.failure from None
            if not isinstance(error, RegistryError):
                raise
            if intake is not None:
                try:
                    await intake.drain()  # the client's rest: the next attempt replays it
                except Exception:
                    if intake.failure is not None:
                        undo(spool, mark, intake.failure)
                    raise
            if error.code not in FRESH_MAY_HELP or spool.lost or attempt == ATTEMPTS:
                raise
            _again(session, error)
        finally:
            spool.pause()
    raise AssertionError("unreachable: the last attempt returns or raises")


def _body(
    spool: Spool,
    mark: Mark,
    intake: Intake | None,
    length: int | None,
    check: Callable[[], Awaitable[None]],
) -> tuple[AsyncIterator[bytes], int | None]:
    """The final write's body and its length, when known: the spool as it stood, then
    the client's body streaming through; once that is all spooled, the spool alone."""
    if intake is None or intake.done:
        return gated(spool.replay(spool.size), check, spool.size), spool.size
    total = mark.size + length if length is not None else None
    return gated(chained(spool.replay(mark.size), intake.pieces()), check, total), total


def _matches(spool: Spool, digest: Digest) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        if not spool.lost and not await spool.matches(digest):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"the {spool.size} bytes uploaded do not match {digest}",
                detail={"digest": str(digest)},
            )

    return check


def undo(spool: Spool, mark: Mark, failure: Exception) -> None:
    """A body refused (for its size, or past its owner's allowance) leaves no trace;
    one the client cut off is kept (the client can ask where it stands and go on)."""
    if getattr(failure, "code", None) is not ErrorCode.CLIENT_GONE:
        spool.rollback(mark)


def _again(session: Session, error: RegistryError) -> None:
    log.warning(
        "upload %s: upstream did not take the write (%s); writing the blob again to a "
        "fresh upstream session", session.id, error.code.wire,
    )  # fmt: skip
