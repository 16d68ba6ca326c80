"""Manifest GET/HEAD: digests are immutable, tags are pointers with a TTL.

By digest: answered from the cache forever once fetched and verified.
By tag: within its TTL (``cache.tag_ttl`` or a tag policy) answered locally; past
it, revalidated by one upstream ``HEAD`` in a task of the tag's own
(``proxy.services.revalidation``: in the background within
``cache.revalidate_window``, the stale rules on failure); an immutable tag never.
Concurrent misses of one digest share one upstream call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.manifest_rows import ManifestRow, TagRow
from proxy.cache.singleflight import SingleFlight
from proxy.clock import SYSTEM, Clock
from proxy.config import CacheSettings
from proxy.metrics import Metrics
from proxy.oci import mediatypes as mt
from proxy.oci import schema1
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.manifest import MANIFEST_READ_LIMIT
from proxy.oci.names import Repository
from proxy.oci.references import children, digests_in_file
from proxy.services.answers import Answer
from proxy.services.negative import MANIFEST, NegativeCache, is_missing
from proxy.services.revalidation import TagRevalidations
from proxy.upstream.registry import ManifestBody, Registry

log = logging.getLogger("gar_proxy.manifests")
# Asked before a manifest's content is served; raises to refuse it (proxy.services.gate).
ManifestGate = Callable[[Repository, Digest, str], Awaitable[None]]


class ManifestService:
    def __init__(
        self,
        settings: CacheSettings,
        index: CacheIndex,
        cache: BlobCache,
        registry: Registry,
        metrics: Metrics,
        clock: Clock = SYSTEM,
        missing: NegativeCache | None = None,
        *,
        gate: ManifestGate | None = None,
        immutable_repository: Callable[[Repository], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.index = index
        self.cache = cache
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.missing = missing or NegativeCache(0, clock)
        self._flights: SingleFlight[ManifestRow] = SingleFlight()
        self._scope_checks: SingleFlight[bool] = SingleFlight()
        self.tags = TagRevalidations(
            settings, index, registry, metrics, clock, self.missing, self,
            immutable_repository or (lambda repo: False),
        )  # fmt: skip

    def _unknown(self, repo: Repository, reference: str | Digest) -> RegistryError:
        """Upstream's remembered answer when there is one (its words, its code), else ours."""
        replayed = self.missing.replay(MANIFEST, str(repo), str(reference))
        if replayed is not None:
            return replayed
        return RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {repo}:{reference} is not known",
            detail={"name": repo.path, "reference": str(reference)},
        )

    async def get(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...], *, head: bool
    ) -> Answer:
        for _ in range(2):
            if isinstance(reference, Digest):
                row = await self._by_digest(repo, reference)
            else:
                row = await self._by_tag(repo, reference, accept)
            if self.gate is not None and not head:
                await self.gate(repo, row.digest, row.media_type)
            answer = self._answer(row, head)
            if answer is not None:
                return answer
            # else a large manifest's file went since the lookup: look again
        raise RegistryError(
            ErrorCode.CACHE_EVICTED,
            f"manifest {reference} was evicted as soon as it was fetched (cache.max_size)",
        )

    def _answer(self, row: ManifestRow, head: bool) -> Answer | None:
        self.index.touch(row.digest)  # a read, for cache.max_age
        if head or row.body is not None:
            return Answer(row.digest, row.media_type, row.size, body=None if head else row.body)
        body = self.cache.read(row.digest)
        return None if body is None else Answer(row.digest, row.media_type, row.size, body=body)

    async def cached(self, digest: Digest) -> ManifestRow | None:
        """The cached manifest; a miss if it was kept as a blob file (over 4 MiB) that
        eviction or ``verify`` has removed since."""
        row = await self.index.manifests.get(digest)
        if row is not None and row.body is None and self.cache.size(digest) is None:
            return None
        return row

    async def _by_digest(self, repo: Repository, digest: Digest) -> ManifestRow:
        row = await self.cached(digest)
        if row is not None:
            if not (self.index.scopes.known(str(repo), digest) or await self._scoped(repo, digest)):
                raise self._unknown(repo, digest)
            self.metrics.manifest("hit")
            return row
        if self.settings.offline or self._known_missing(repo, str(digest)):
            raise self._unknown(repo, digest)
        self.metrics.manifest("miss")
        return await self._remembering(repo, str(digest), self.fetch_digest(repo, digest))

    async def fetch_digest(self, repo: Repository, digest: Digest) -> ManifestRow:
        """Fetched by digest, verified and stored; one upstream GET however many ask."""
        fetch = lambda: self._fetch(repo, str(digest), mt.DEFAULT_ACCEPT, digest)  # noqa: E731
        return await self._flights.do((repo.path, str(digest)), fetch)

    async def fetch_tag(self, repo: Repository, tag: str) -> ManifestRow:
        """Fetched by tag with the full Accept list, stored (the tag is not written)."""
        return await self._fetch(repo, tag, mt.DEFAULT_ACCEPT, None)

    async def _by_tag(self, repo: Repository, tag: str, accept: tuple[str, ...]) -> ManifestRow:
        key = str(repo)
        tag_row = await self.index.tags.get(key, tag)
        schema1_already = tag_row is not None and tag_row.media_type in accept
        if (
            accept
            and all(t in mt.SCHEMA1_TYPES for t in accept if t in mt.MANIFEST_TYPES)
            and any(t in mt.SCHEMA1_TYPES for t in accept)
            and not schema1_already  # a schema-1 tag (GAR.md N1) is served as cached
        ):
            return await self._passthrough(repo, tag, accept)
        if tag_row is not None:
            served = await self._from_tag(repo, tag, tag_row, accept)
            if served is not None:
                return served
        if self.settings.offline or self._known_missing(repo, tag):
            raise self._unknown(repo, tag)
        self.metrics.manifest("miss")
        row = await self._remembering(repo, tag, self.tags.fetch(repo, tag))
        if not mt.accepts(accept, row.media_type):
            return await self._passthrough(repo, tag, accept)
        return row

    async def _from_tag(
        self, repo: Repository, tag: str, tag_row: TagRow, accept: tuple[str, ...]
    ) -> ManifestRow | None:
        """The cached manifest for a tag: fresh, immutable, or as its revalidation says."""
        cached = await self.cached(tag_row.digest)
        if cached is None or not mt.accepts(accept, tag_row.media_type):
            return None
        ttl = self.tags.ttl(repo, tag)
        if ttl is None or self.settings.offline or self.clock.time() - tag_row.verified < ttl:
            self.metrics.manifest("hit")
            return cached
        return await self.tags.expired(repo, tag, tag_row, cached, ttl)

    async def _scoped(self, repo: Repository, digest: Digest) -> bool:
        """Cached for some repository: does ``repo`` hold it upstream? One HEAD per
        repository, remembered; offline, only what is known for ``repo``."""
        key = str(repo)
        if await self.index.scopes.stored(key, digest):
            return True
        if self.settings.offline or self._known_missing(repo, str(digest)):
            return False
        return await self._scope_checks.do((key, digest), lambda: self._check(repo, digest))

    async def _check(self, repo: Repository, digest: Digest) -> bool:
        key = str(repo)
        self.metrics.manifest("scope_check")
        if await self.registry.head_manifest(repo, digest, mt.DEFAULT_ACCEPT) is None:
            self.missing.remember(MANIFEST, key, str(digest))
            return False
        await self.index.scopes.add(key, digest)
        return True

    def _known_missing(self, repo: Repository, reference: str) -> bool:
        if self.missing.known_missing(MANIFEST, str(repo), reference):
            self.metrics.manifest("negative")  # answered "unknown" without asking upstream
            return True
        return False

    async def _remembering(
        self, repo: Repository, reference: str, fetch: Awaitable[ManifestRow]
    ) -> ManifestRow:
        """Awaits ``fetch``; an upstream "unknown" is remembered for ``negative_ttl``."""
        try:
            return await fetch
        except RegistryError as error:
            if is_missing(error):
                self.missing.remember(MANIFEST, str(repo), reference, error)
            raise

    async def _passthrough(
        self, repo: Repository, tag: str, accept: tuple[str, ...]
    ) -> ManifestRow:
        """A client that takes none of what the tag holds: ask upstream in its words."""
        return await self._fetch(repo, tag, accept, None)

    async def _fetch(
        self, repo: Repository, reference: str, accept: tuple[str, ...], expected: Digest | None
    ) -> ManifestRow:
        return await self._fetch_row(repo, reference, accept, expected)

    async def _fetch_row(
        self, repo: Repository, reference: str, accept: tuple[str, ...], expected: Digest | None
    ) -> ManifestRow:
        self.metrics.upstream_manifest_fetch()
        stream = await self.registry.get_manifest(repo, reference, accept)
        try:
            digest = expected or stream.digest
            size = stream.size
            if size is not None and size > self.settings.manifest_max_size:
                raise RegistryError(
                    ErrorCode.MANIFEST_INVALID,
                    f"manifest of {size} bytes is over the limit of "
                    f"{self.settings.manifest_max_size} (cache.manifest_max_size)",
                )
            if size is not None and size > MANIFEST_READ_LIMIT and digest is not None:
                return await self._fetch_large(repo, stream, digest)
            body = await stream.read(MANIFEST_READ_LIMIT)
        finally:
            await stream.aclose()
        if body is None:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                "upstream manifest is over 4 MiB and came without a length or digest",
            )
        return await self._store(repo, body, stream.media_type, digest)

    async def _store(
        self, repo: Repository, body: bytes, media_type: str, digest: Digest | None
    ) -> ManifestRow:
        # A signed schema-1 manifest has two possible names (docs/GAR.md N2): upstream's
        # is the one kept; without one, distribution's (its signed payload's).
        names = schema1.digests(body, media_type, digest.algorithm if digest else "sha256")
        actual = digest if digest in names else names[0]
        if digest is not None and actual != digest:
            log.error("upstream manifest for %s hashed to %s; not cached", digest, actual)
            raise RegistryError(
                ErrorCode.UPSTREAM_CORRUPT,
                f"upstream manifest does not match its digest {digest}",
                detail={"expected": str(digest), "actual": str(actual)},
            )
        row = ManifestRow(actual, media_type, len(body), body)
        self._in_scope(repo, actual)
        await self.index.manifests.put(row, children(body, media_type))
        return row

    def _in_scope(self, repo: Repository, digest: Digest) -> None:
        """Upstream has ``digest`` in ``repo``: noted before its row can be seen, or a
        request finding the row meanwhile would ask upstream (a HEAD) to scope it."""
        self.index.scopes.add_soon(str(repo), digest)

    async def _fetch_large(
        self, repo: Repository, stream: ManifestBody, digest: Digest
    ) -> ManifestRow:
        """Stream a big manifest into the blob store, verified, never held in memory."""

        async def opened() -> ManifestBody:
            return stream

        fill = self.cache.fill(digest, opened)
        await fill.wait()
        row = ManifestRow(digest, stream.media_type, fill.written, None)
        try:
            refs = await asyncio.to_thread(digests_in_file, self.cache.store.path(digest))
        except FileNotFoundError:
            refs = []  # evicted already; fetched again (with children) when asked
        self._in_scope(repo, digest)
        await self.index.manifests.put(row, refs)
        return row
