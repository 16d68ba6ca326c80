"""Manifest GET/HEAD: digests are immutable, tags are pointers with a TTL.

By digest: answered from the cache forever once fetched and verified.
By tag: within ``tag_ttl`` answered locally; after it, one upstream ``HEAD`` (not a
GET) revalidates; a changed digest is fetched once; an upstream 404 drops the tag;
an upstream outage or rate limit serves the stale tag (up to ``max_stale``), counted,
and for ``stale_recheck`` after such a failure without asking upstream again.
Concurrent misses and revalidations of one key share one upstream call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex, ManifestRow, TagRow
from proxy.cache.singleflight import SingleFlight
from proxy.clock import SYSTEM, Clock
from proxy.config import CacheSettings
from proxy.metrics import Metrics
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.manifest import MANIFEST_READ_LIMIT
from proxy.oci.names import Repository
from proxy.oci.references import children, digests_in_file
from proxy.services.answers import Answer
from proxy.services.negative import MANIFEST, NegativeCache, is_missing
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
        self._checks: SingleFlight[Digest | None] = SingleFlight()
        self._scope_checks: SingleFlight[bool] = SingleFlight()
        # (repo, tag) -> monotonic time before which a stale tag is served unasked.
        self._recheck_at: dict[tuple[str, str], float] = {}

    def _unknown(self, repo: Repository, reference: str | Digest) -> RegistryError:
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

    async def _cached(self, digest: Digest) -> ManifestRow | None:
        """The cached manifest; a miss if it was kept as a blob file (over 4 MiB) that
        eviction or ``verify`` has removed since."""
        row = await self.index.get_manifest(digest)
        if row is not None and row.body is None and self.cache.size(digest) is None:
            return None
        return row

    async def _by_digest(self, repo: Repository, digest: Digest) -> ManifestRow:
        row = await self._cached(digest)
        if row is not None:
            if not (self.index.scopes.known(str(repo), digest) or await self._scoped(repo, digest)):
                raise self._unknown(repo, digest)
            self.metrics.manifest("hit")
            return row
        if self.settings.offline or self._known_missing(repo, str(digest)):
            raise self._unknown(repo, digest)
        self.metrics.manifest("miss")
        fetch = lambda: self._fetch(repo, str(digest), mt.DEFAULT_ACCEPT, digest)  # noqa: E731
        return await self._remembering(
            repo, str(digest), self._flights.do((repo.path, str(digest)), fetch)
        )

    async def _by_tag(self, repo: Repository, tag: str, accept: tuple[str, ...]) -> ManifestRow:
        key = str(repo)
        if (
            accept
            and all(t in mt.SCHEMA1_TYPES for t in accept if t in mt.MANIFEST_TYPES)
            and any(t in mt.SCHEMA1_TYPES for t in accept)
        ):
            return await self._passthrough(repo, tag, accept)
        tag_row = await self.index.get_tag(key, tag)
        if tag_row is not None:
            served = await self._from_tag(repo, key, tag, tag_row, accept)
            if served is not None:
                return served
        if self.settings.offline or self._known_missing(repo, tag):
            raise self._unknown(repo, tag)
        self.metrics.manifest("miss")
        fetch = self._flights.do((key, tag), lambda: self._fetch_tag(repo, key, tag))
        row = await self._remembering(repo, tag, fetch)
        if not mt.accepts(accept, row.media_type):
            return await self._passthrough(repo, tag, accept)
        return row

    async def _from_tag(
        self, repo: Repository, key: str, tag: str, tag_row: TagRow, accept: tuple[str, ...]
    ) -> ManifestRow | None:
        """The cached manifest for a tag if it is fresh, revalidated, or servable stale."""
        cached = await self._cached(tag_row.digest)
        if cached is None or not mt.accepts(accept, tag_row.media_type):
            return None
        age = self.clock.time() - tag_row.verified
        if age < self.settings.tag_ttl or self.settings.offline:
            self.metrics.manifest("hit")
            return cached
        servable_stale = age < self.settings.max_stale
        if servable_stale and self._recheck_at.get((key, tag), 0.0) > self.clock.monotonic():
            self.metrics.stale()  # upstream failed moments ago: don't wait on it
            return cached
        try:
            current = await self._checks.do((key, tag), lambda: self._head_digest(repo, tag))
        except RegistryError as error:
            if error.code.serve_stale and servable_stale:
                wait = self.settings.stale_recheck
                self._recheck_at[(key, tag)] = self.clock.monotonic() + wait
                log.warning(
                    "serving stale tag %s:%s (%.0fs old) for %gs: %s",
                    key, tag, age, wait, error.message,
                )  # fmt: skip
                self.metrics.stale()
                return cached
            if error.code is ErrorCode.MANIFEST_UNKNOWN:
                await self.index.delete_tag(key, tag)
            if is_missing(error):
                self.missing.remember(MANIFEST, key, tag)
            raise
        self._recheck_at.pop((key, tag), None)
        if current == tag_row.digest:
            await self.index.mark_verified(key, tag)
            self.metrics.manifest("revalidated")
            return cached
        return None

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
                self.missing.remember(MANIFEST, str(repo), reference)
            raise

    async def _head_digest(self, repo: Repository, tag: str) -> Digest | None:
        info = await self.registry.head_manifest(repo, tag, mt.DEFAULT_ACCEPT)
        if info is None:
            raise self._unknown(repo, tag)
        return info.digest

    async def _fetch_tag(self, repo: Repository, key: str, tag: str) -> ManifestRow:
        try:
            row = await self._fetch(repo, tag, mt.DEFAULT_ACCEPT, None)
        except RegistryError as error:
            if error.code is ErrorCode.MANIFEST_UNKNOWN:
                await self.index.delete_tag(key, tag)
            raise
        await self.index.put_tag(key, tag, row.digest, row.media_type)
        return row

    async def _passthrough(
        self, repo: Repository, tag: str, accept: tuple[str, ...]
    ) -> ManifestRow:
        """A client that takes none of what the tag holds: ask upstream in its words."""
        return await self._fetch(repo, tag, accept, None)

    async def _fetch(
        self, repo: Repository, reference: str, accept: tuple[str, ...], expected: Digest | None
    ) -> ManifestRow:
        row = await self._fetch_row(repo, reference, accept, expected)
        self.index.scopes.add_soon(str(repo), row.digest)  # upstream has it in ``repo``
        return row

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
                return await self._fetch_large(stream, digest)
            body = await stream.read(MANIFEST_READ_LIMIT)
        finally:
            await stream.aclose()
        if body is None:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                "upstream manifest is over 4 MiB and came without a length or digest",
            )
        return await self._store(body, stream.media_type, digest)

    async def _store(self, body: bytes, media_type: str, digest: Digest | None) -> ManifestRow:
        actual = Digest.of(body, digest.algorithm if digest else "sha256")
        if digest is not None and actual != digest:
            log.error("upstream manifest for %s hashed to %s; not cached", digest, actual)
            raise RegistryError(
                ErrorCode.UPSTREAM_CORRUPT,
                f"upstream manifest does not match its digest {digest}",
                detail={"expected": str(digest), "actual": str(actual)},
            )
        row = ManifestRow(actual, media_type, len(body), body)
        await self.index.put_manifest(row, children(body, media_type))
        return row

    async def _fetch_large(self, stream: ManifestBody, digest: Digest) -> ManifestRow:
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
        await self.index.put_manifest(row, refs)
        return row
