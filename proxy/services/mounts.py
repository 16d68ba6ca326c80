"""Cross-repository mounts, and getting a blob upstream without the client's bytes.

GAR mounts only within one project and location. A mount there is forwarded; any
other mount (or one upstream answers with 202) is done by the proxy itself: it
uploads the blob from its cache, or streams it from the source repository through
an ordinary (cache-filling) GET, and answers 201, so a client never sends bytes the
proxy can reach. Only when the proxy cannot reach them either does the client get
an upload session (202), as the spec says a registry that cannot mount answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator

from proxy.cache.blobs import BlobCache
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from proxy.oci.names import Repository
from proxy.services.blob_uploads import UploadService
from proxy.services.blobs import BlobService
from proxy.services.negative import BLOB
from proxy.services.upload_session import Chunk, Session
from proxy.upstream.registry import Registry

log = logging.getLogger("gar_proxy.mounts")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class MountService:
    def __init__(
        self,
        registry: Registry,
        cache: BlobCache,
        blobs: BlobService,
        uploads: UploadService,
        *,
        gar: bool,
        offline: bool,
    ) -> None:
        self.gar = gar
        self.offline = offline
        self.registry = registry
        self.cache = cache
        self.blobs = blobs
        self.uploads = uploads

    def same_home(self, repo: Repository, source: Repository) -> bool:
        """Can upstream mount between these two (GAR: same project and location)?"""
        if not self.gar:
            return True
        return repo.project == source.project and repo.location == source.location

    async def mount(
        self, repo: Repository, digest: Digest, source: Repository | None
    ) -> Session | None:
        """None: ``digest`` is in ``repo`` upstream now. A session: the client uploads it."""
        session = await self._mount(repo, digest, source)
        if session is None:  # it exists now: a remembered "unknown" would be wrong
            self.uploads.missing.forget(BLOB, str(repo), str(digest))
            await self.cache.index.scopes.add(str(repo), digest)
        return session

    async def _mount(
        self, repo: Repository, digest: Digest, source: Repository | None
    ) -> Session | None:
        if source is None or self.same_home(repo, source):
            session = await self._forward(repo, digest, source)
            if session is None:
                return None
        else:
            if await self.upstream_has(repo, digest):
                return None
            session = await self.uploads.start(repo)
        body = await self._reachable(digest, source)
        if body is None:
            return session
        await self._copy(session, digest, body)
        return None

    async def ensure(self, repo: Repository, digest: Digest) -> bool:
        """Is ``digest`` in ``repo`` upstream, if need be uploaded from the cache?"""
        if await self.upstream_has(repo, digest):
            return True
        body = await self._reachable(digest, None)
        if body is None:
            return False
        log.info("%s: uploading %s from the cache", repo, digest)
        await self._copy(await self.uploads.start(repo), digest, body)
        return True

    async def upstream_has(self, repo: Repository, digest: Digest) -> bool:
        if await self.registry.stat_blob(repo, digest) is None:
            return False
        await self.cache.index.scopes.add(str(repo), digest)
        return True

    async def _forward(
        self, repo: Repository, digest: Digest, source: Repository | None
    ) -> Session | None:
        progress = await self.registry.mount(repo, digest, source)
        if progress is None:
            return None
        return await self.uploads.adopt(repo, progress, keep=True)

    async def _reachable(
        self, digest: Digest, source: Repository | None
    ) -> tuple[AsyncIterable[bytes], int | None] | None:
        """The blob's bytes from the cache or the source repository, or None."""
        size = self.cache.size(digest)
        if size is not None:
            cached = self.cache.read(digest)
            if cached is not None:  # else evicted since the stat: reach it from the source
                return cached, size
        if source is None or self.offline:
            return None
        try:
            answer = await self.blobs.get(source, digest, None)
        except RegistryError as error:
            if error.status == 404:
                return None
            raise
        if isinstance(answer.body, bytes):
            return _once(answer.body), len(answer.body)
        assert answer.body is not None
        return answer.body, answer.size

    async def _copy(
        self, session: Session, digest: Digest, body: tuple[AsyncIterable[bytes], int | None]
    ) -> None:
        """Upload the blob into ``session`` ourselves; already cached, so no tee."""
        session.tee.discard()
        stream, size = body
        try:
            await self.uploads.finish(session, digest, Chunk(stream, size))
        except Exception:
            await self.uploads.abandon(session)
            raise
