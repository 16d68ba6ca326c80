"""Cross-repository mounts, and blobs the proxy writes upstream without the client.

``POST ?mount=D&from=S`` (whether the client may pull S is decided before, in
``proxy.auth``):

- no ``from``, or an empty one: an ordinary upload session (202). The cache holding D
  for some other repository is no reason to copy it: content addressing is a storage
  detail, not a permission.
- S in another GAR location: GAR cannot mount across regions, so the proxy copies the
  blob itself when it is reachable in S (known in S's cache scope, or a HEAD on S
  upstream says so), as one write to the target, and answers 201; otherwise a session.
- otherwise the mount goes to upstream: within a project GAR mounts; across projects
  in one location the evidence is unknown, so 201 and 202 are both taken. A 202 (GAR
  would not mount) falls back to that copy, into the session GAR opened, or hands the
  session to the client (docs/GAR.md).

A manifest PUT whose blob only the cache holds has it written from the cache
(``ensure``), but only a blob the cache may lend to that write (``lendable``): one the
target repository holds in its scope (a HEAD there was answered from the cache, so the
client may have skipped it), or one a repository the caller may pull holds. Knowing a
digest is no permission: without this a manifest naming a layer cached for a repository
the caller may not read would copy it into one it may.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable

from proxy.cache.blobs import BlobCache
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.blob_copy import write_whole
from proxy.services.blob_uploads import UploadService
from proxy.services.blobs import BlobService
from proxy.services.negative import BLOB
from proxy.services.upload_session import UploadState
from proxy.upstream.registry import Registry, UploadProgress

log = logging.getLogger("gar_proxy.mounts")
# What the caller may pull (a repository name as the cache's scopes key it -> may it?);
# None: everything (no access rules, or a pull grant on every repository).
Readable = Callable[[str], bool] | None


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
        self.scopes = cache.index.scopes

    async def mount(
        self, repo: Repository, digest: Digest, source: Repository | None, *, owner: str
    ) -> UploadState | None:
        """None: ``digest`` is in ``repo`` upstream now. A state: ``owner``'s session,
        into which the client uploads it."""
        await self.uploads.make_room(owner)  # before upstream may open a session
        if source is None:
            return (await self.uploads.start(repo, owner=owner)).state()
        state = await self._mount(repo, digest, source, owner)
        if state is None:  # it exists now: a remembered "unknown" would be wrong
            self.uploads.missing.forget(BLOB, str(repo), str(digest))
            await self.scopes.add(str(repo), digest)
        return state

    async def _mount(
        self, repo: Repository, digest: Digest, source: Repository, owner: str
    ) -> UploadState | None:
        if self.gar and repo.location != source.location:  # GAR mounts within a region
            if await self.upstream_has(repo, digest):
                return None
            if await self._copied(repo, digest, source, None):
                return None
            return (await self.uploads.start(repo, owner=owner)).state()
        progress = await self.registry.mount(repo, digest, source)
        if progress is None:
            return None
        if await self._copied(repo, digest, source, progress):
            return None
        return (await self.uploads.adopt(repo, progress, owner=owner)).state()

    async def ensure(self, repo: Repository, digest: Digest, readable: Readable = None) -> bool:
        """Is ``digest`` in ``repo`` upstream, if need be written from the cache? (A
        manifest push whose blob a HEAD answered from the cache may have skipped.) Only
        what the cache may lend to the caller (``lendable``) is written."""
        if await self.upstream_has(repo, digest):
            return True
        if self.cache.size(digest) is None or not await self.lendable(repo, digest, readable):
            return False
        log.info("%s: writing %s upstream from the cache", repo, digest)
        await write_whole(self.registry, repo, digest, lambda: self._open(None, digest))
        await self.scopes.add(str(repo), digest)
        return True

    async def lendable(self, repo: Repository, digest: Digest, readable: Readable) -> bool:
        """May the cache's copy of ``digest`` be written into ``repo`` for a caller who
        may pull what ``readable`` accepts? When ``repo``'s scope holds it, or the scope
        of a repository the caller may pull."""
        key = str(repo)
        if readable is None or self.scopes.known(key, digest):
            return True
        if await self.scopes.stored(key, digest):
            return True
        return any(readable(holder) for holder in await self.scopes.holders(digest))

    async def upstream_has(self, repo: Repository, digest: Digest) -> bool:
        if await self.registry.stat_blob(repo, digest) is None:
            return False
        await self.scopes.add(str(repo), digest)
        return True

    async def _copied(
        self, repo: Repository, digest: Digest, source: Repository, session: UploadProgress | None
    ) -> bool:
        """The blob copied from ``source`` into ``repo`` (into ``session``, if GAR opened
        one), when it is reachable there; False when it is not."""
        if not await self._reachable_in(source, digest):
            return False
        try:
            await write_whole(
                self.registry, repo, digest, lambda: self._open(source, digest), session=session
            )
        except RegistryError as error:
            if error.code is not ErrorCode.BLOB_UNKNOWN:  # else gone from the source since
                raise
            return False
        return True

    async def _reachable_in(self, source: Repository, digest: Digest) -> bool:
        """Known in ``source``'s cache scope, or upstream says ``source`` holds it."""
        key = str(source)
        if self.scopes.known(key, digest) or await self.scopes.stored(key, digest):
            return True
        if self.offline:
            return False
        try:
            found = await self.registry.stat_blob(source, digest) is not None
        except RegistryError as error:  # the client uploads it: nothing is lost
            log.info("%s: could not ask %s for %s (%s)", key, source, digest, error.code.wire)
            return False
        if found:
            await self.scopes.add(key, digest)
        return found

    async def _open(
        self, source: Repository | None, digest: Digest
    ) -> tuple[AsyncIterable[bytes], int | None]:
        """The blob's bytes: the cached file, else a (cache-filling) read of ``source``."""
        size = self.cache.size(digest)
        if size is not None:
            cached = self.cache.read(digest)
            if cached is not None:  # else evicted since the stat
                return cached, size
        if source is None:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"{digest} left the cache")
        answer = await self.blobs.get(source, digest, None)
        if isinstance(answer.body, bytes):
            return _once(answer.body), len(answer.body)
        assert answer.body is not None
        return answer.body, answer.size
