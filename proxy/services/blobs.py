"""Blob GET/HEAD: answer from the cache, or fill it from upstream while streaming."""

from __future__ import annotations

import logging
import weakref

from proxy.cache.blobs import BlobCache
from proxy.cache.fills import Fill, Source
from proxy.cache.passthrough import PassThrough
from proxy.cache.shared import SharedTier
from proxy.cache.singleflight import SingleFlight
from proxy.metrics import Metrics
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.oci.ranges import parse_range
from proxy.services.answers import Answer
from proxy.services.negative import BLOB, NegativeCache, is_missing
from proxy.upstream.registry import Registry, Stream

log = logging.getLogger("gar_proxy.blobs")


class BlobService:
    def __init__(
        self,
        cache: BlobCache,
        registry: Registry,
        metrics: Metrics,
        *,
        offline: bool,
        missing: NegativeCache | None = None,
        shared: SharedTier | None = None,
    ) -> None:
        self.missing = missing or NegativeCache(0)
        self.cache = cache
        self.registry = registry
        self.metrics = metrics
        self.offline = offline
        self.scopes = cache.index.scopes
        self._checks: SingleFlight[bool] = SingleFlight()  # concurrent checks: one HEAD
        self.shared = shared  # cache.shared: the bucket before GAR (proxy.cache.shared)
        # Fills of the bucket's bytes: answered once verified, from GAR if they were not.
        self._from_bucket: weakref.WeakSet[Fill] = weakref.WeakSet()

    def _unknown(self, digest: Digest, repo: Repository | None = None) -> RegistryError:
        """Upstream's remembered answer for ``repo`` when there is one, else ours."""
        replayed = self.missing.replay(BLOB, str(repo), str(digest)) if repo else None
        if replayed is not None:
            return replayed
        return RegistryError(
            ErrorCode.BLOB_UNKNOWN, f"blob {digest} is not known", detail={"digest": str(digest)}
        )

    async def _scoped(self, repo: Repository, digest: Digest) -> bool:
        """Cached (or being fetched) for some repository: does ``repo`` hold it upstream?
        Asked once (a HEAD) per repository and remembered; offline, only what is known."""
        key = str(repo)
        if self.scopes.known(key, digest) or await self.scopes.stored(key, digest):
            return True
        if self.offline or self._known_missing(repo, digest):
            return False
        return await self._checks.do((key, digest), lambda: self._check(repo, digest))

    async def _check(self, repo: Repository, digest: Digest) -> bool:
        key = str(repo)
        self.metrics.cache.labels("blob", "scope_check").inc()
        if await self.registry.stat_blob(repo, digest) is None:
            self.missing.remember(BLOB, key, str(digest))
            return False
        await self.scopes.add(key, digest)
        return True

    async def head(self, repo: Repository, digest: Digest) -> Answer:
        size = self.cache.size(digest)
        if size is not None:
            if not (self.scopes.known(str(repo), digest) or await self._scoped(repo, digest)):
                raise self._unknown(digest)
            self.metrics.blob_hit()
            return Answer(digest, mt.OCTET_STREAM, size)
        if self.offline or self._known_missing(repo, digest):
            raise self._unknown(digest, repo)
        info = await self.registry.stat_blob(repo, digest)
        if info is None:
            self.missing.remember(BLOB, str(repo), str(digest))
            raise self._unknown(digest)
        await self.scopes.add(str(repo), digest)
        if info.size is None:  # upstream named no length (docs/GAR.md D4): a HEAD must
            return await self._measured(repo, digest)
        return Answer(digest, mt.OCTET_STREAM, info.size)

    async def _measured(self, repo: Repository, digest: Digest) -> Answer:
        """A HEAD's answer when upstream's HEAD gave no ``Content-Length``: the blob is
        fetched (as the client's GET next would) and its verified size answered, never 0."""
        fill = await self._filling(repo, digest)
        if fill.uncached:  # no room to keep it: counted as it passes, verified, dropped
            source = fill.take() or await self._open_upstream(repo, digest)
            counted = 0
            async for chunk in PassThrough(source, digest):
                counted += len(chunk)
            return Answer(digest, mt.OCTET_STREAM, counted)
        await fill.wait()
        size = self.cache.size(digest)
        if size is None:
            raise _evicted(digest)
        return Answer(digest, mt.OCTET_STREAM, size)

    async def get(self, repo: Repository, digest: Digest, range_header: str | None) -> Answer:
        size = self.cache.size(digest)
        if size is not None:
            if not (self.scopes.known(str(repo), digest) or await self._scoped(repo, digest)):
                raise self._unknown(digest)
            answer = self._from_cache(digest, size, range_header)
            if answer is not None:  # else evicted or collected since the stat: a miss
                self.metrics.blob_hit()
                return answer
        if self.offline or self._known_missing(repo, digest):
            raise self._unknown(digest, repo)
        running = self.cache.fills.get(digest)
        foreign = running is not None and running.origin != str(repo)
        if foreign and not await self._scoped(repo, digest):  # another repository's fill
            raise self._unknown(digest)
        self.metrics.blob_miss(joined=running is not None)
        fill = await self._filling(repo, digest)
        if fill.uncached:
            return await self._pass_through(repo, digest, fill)
        if range_header or fill in self._from_bucket:
            # A range of unverified bytes could be wrong bytes: serve it once verified.
            await fill.wait()
            answer = self._from_cache(digest, fill.written, range_header)
            if answer is None:
                raise _evicted(digest)
            return answer
        return Answer(digest, mt.OCTET_STREAM, fill.size, body=self.cache.follow(fill))

    def _fill(self, repo: Repository, digest: Digest) -> Fill:
        fill = self.cache.fill(digest, lambda: self._open(repo, digest))
        if fill.origin is None:
            fill.origin = str(repo)
        return fill

    async def _filling(self, repo: Repository, digest: Digest) -> Fill:
        """The fill of ``digest`` once it has headers. One of the bucket's bytes is
        waited for until verified; if they were bad, a fill from GAR replaces it."""
        fill = self._fill(repo, digest)
        await fill.started()
        if self.shared is None or fill.uncached or fill not in self._from_bucket:
            return fill  # uncached: PassThrough checks the digest, cuts a bad copy short
        try:
            await fill.wait()
            return fill
        except RegistryError as error:
            if error.code is ErrorCode.CACHE_FULL:
                raise
            self.shared.rejected(digest, error)  # the tier reads it no more: GAR's turn
        fill = self._fill(repo, digest)
        await fill.started()
        return fill

    async def _open(self, repo: Repository, digest: Digest) -> Source:
        """A fill's source: the shared bucket's copy if it has one, else GAR's (which
        is then written to the bucket once the fill is committed)."""
        fill = self.cache.fills.get(digest)  # the fill calling: registered before it runs
        if self.shared is None or fill is None:
            return await self._open_upstream(repo, digest)
        if await self._may_share(repo, digest):
            source = await self.shared.open(digest)
            if source is not None:
                self._from_bucket.add(fill)
                return source
        stream = await self._open_upstream(repo, digest)
        self.shared.upload_after(fill)
        return stream

    async def _may_share(self, repo: Repository, digest: Digest) -> bool:
        """The bucket holds every repository's blobs: serve ``repo`` one only when it is
        known to hold it upstream (it was fetched or checked through ``repo``, or a HEAD
        to GAR says so now). A manifest listing the digest is not enough: a foreign
        layer (``urls``) is listed without being held, so a push could name any digest."""
        if self.scopes.known(str(repo), digest):
            return True
        try:
            return await self._scoped(repo, digest)
        except RegistryError:
            return False  # GAR could not say: ask it for the bytes, as without the tier

    async def _pass_through(self, repo: Repository, digest: Digest, fill: Fill) -> Answer:
        """No room on the cache disk: upstream's bytes to this client, uncached (a Range
        is ignored: a full 200 is a correct answer to it)."""
        source = fill.take() or await self._open_upstream(repo, digest)
        log.warning("cache disk full: passing %s through uncached", digest)
        self.metrics.cache.labels("blob", "passthrough").inc()
        body = PassThrough(source, digest)
        return Answer(digest, mt.OCTET_STREAM, body.size, body=body)

    def _from_cache(self, digest: Digest, size: int, range_header: str | None) -> Answer | None:
        span = parse_range(range_header, size)
        start, end = span if span is not None else (0, size)  # size known: no second fstat
        body = self.cache.read(digest, start, end)
        if body is None:
            return None
        return Answer(digest, mt.OCTET_STREAM, size, body=body, span=span)

    def _known_missing(self, repo: Repository, digest: Digest) -> bool:
        if self.missing.known_missing(BLOB, str(repo), str(digest)):
            self.metrics.cache.labels("blob", "negative").inc()  # not asked upstream
            return True
        return False

    async def _open_upstream(self, repo: Repository, digest: Digest) -> Stream:
        try:
            stream = await self.registry.open_blob(repo, digest)
        except RegistryError as error:
            if is_missing(error):
                self.missing.remember(BLOB, str(repo), str(digest), error)
            raise
        self.metrics.upstream_blob_fetch()
        self.scopes.add_soon(str(repo), digest)  # not between upstream and the client
        return stream

    def fill_for(self, digest: Digest) -> Fill | None:
        return self.cache.fills.get(digest)


def _evicted(digest: Digest) -> RegistryError:
    return RegistryError(
        ErrorCode.CACHE_EVICTED,
        f"blob {digest} was evicted as soon as it was fetched; the cache is too "
        "small for what is being pulled (cache.max_size)",
    )
