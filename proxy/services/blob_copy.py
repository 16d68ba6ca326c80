"""A whole blob from a source the proxy can open again, written upstream in one write.

For blobs the proxy itself holds or can reach (a mount it carries out as a copy, a
blob only the cache holds that a manifest needs, a file of ``gar-proxy push``): one
``PUT ?digest=`` with the whole body on an open session, the way GAR takes uploads
(docs/GAR.md). When that write fails in a way a fresh session may get past, the source
is opened again and written to a fresh session; nothing is ever sent twice to one::

    await write_whole(registry, repo, digest, lambda: open_file(path))
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable

from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.upload_flow import FRESH_MAY_HELP
from proxy.upstream.registry import Registry, UploadProgress

log = logging.getLogger("gar_proxy.uploads")

Opener = Callable[[], Awaitable[tuple[AsyncIterable[bytes], int | None]]]
ATTEMPTS = 3  # fresh sessions tried for one blob before its failure is the caller's


async def write_whole(
    registry: Registry,
    repo: Repository,
    digest: Digest,
    open_body: Opener,
    *,
    session: UploadProgress | None = None,
    attempts: int = ATTEMPTS,
    on_retry: Callable[[RegistryError], None] | None = None,
) -> None:
    """Write the blob ``open_body()`` gives into ``session`` (or a new one); on a
    failure a fresh session may get past, again from a new ``open_body()``."""
    for attempt in range(1, attempts + 1):
        target = session if session is not None else await registry.start_upload(repo)
        session = None
        body, size = await open_body()
        try:
            stored = await registry.commit_upload(repo, target.url, digest, body, size)
        except RegistryError as error:
            await _cancel_quietly(registry, repo, target)
            if error.code not in FRESH_MAY_HELP or attempt == attempts:
                raise
            log.warning(
                "%s: writing %s upstream failed (%s); again in a fresh session",
                repo, digest, error.code.wire,
            )  # fmt: skip
            if on_retry is not None:
                on_retry(error)
            continue
        finally:
            await _close(body)
        await check_stored(registry, repo, digest, stored)
        return


async def check_stored(
    registry: Registry, repo: Repository, digest: Digest, stored: Digest | None
) -> None:
    """201 only for what upstream holds at the digest the client named: an answer
    naming another digest is believed only if upstream has ``digest`` (a HEAD)."""
    if stored is None or stored == digest:
        return
    if await registry.stat_blob(repo, digest) is None:
        raise RegistryError(
            ErrorCode.UPSTREAM_CORRUPT,
            f"upstream stored the blob as {stored}, not {digest}; "
            f"{repo.path}@{digest} does not exist upstream",
        )
    log.info("upstream reported %s for %s, which it also holds", stored, digest)


async def _cancel_quietly(registry: Registry, repo: Repository, target: UploadProgress) -> None:
    """Tell upstream a session is given up (it would expire anyway)."""
    try:
        await registry.cancel_upload(repo, target.url)
    except RegistryError as error:
        log.info("%s: cancelling an upstream upload session failed (%s)", repo, error.code.wire)


async def _close(body: AsyncIterable[bytes]) -> None:
    """Release what a body holds (an open file, a cache reader) if it was not used up."""
    with contextlib.suppress(Exception):
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
        close = getattr(body, "close", None)
        if close is not None:
            close()
