"""Tags past their TTL: revalidated by one app-owned task per tag at a time.

Within ``cache.tag_ttl`` (or its tag policy's ``ttl``) a tag is answered from the
cache. Past it, for up to ``cache.revalidate_window`` more (and never past
``cache.max_stale``), it is still answered from the cache at once while a task owned
by the app, not by any client, asks upstream (stale-while-revalidate); past the
window a request waits for that task, as every request did before. However many
clients ask, a tag has at most one task: a second asker joins it.

The task sends one ``HEAD``. Same digest: the tag is marked verified. A new digest:
the new manifest is fetched by that digest and stored, and only then is the tag
pointed at it (``TagRows.put`` changes the in-memory row first, synchronously),
so no request that starts after the swap gets the old manifest, and none gets a
mix: a HEAD, the GET after it and an index's children are all addressed by digest,
and digests are never removed by a swap. Every write of a tag's pointer (a miss's
fetch, a revalidation, a refresh) runs in that tag's one task, and swaps only if the
tag is still what the task read (a push through the proxy or a purge meanwhile wins),
so no writer moves a tag backwards. Upstream 404: the tag is dropped and the 404 remembered
(``cache.negative_ttl``). An outage (5xx, 429, timeout, a refused token): the stale
rules hold unchanged: served stale up to ``cache.max_stale``, and upstream is not
asked again about that tag for ``cache.stale_recheck``. Any other refusal (403,
401, NAME_UNKNOWN) found in the background makes the next request wait and get it.

An immutable tag (a policy, or a GAR repository with ``dockerConfig.immutableTags``)
is never revalidated; ``refresh`` still checks it on demand, and says so loudly
when upstream moved it.

Outcomes are counted in ``garproxy_tag_revalidations_total{trigger, outcome}``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from proxy.cache.index import CacheIndex
from proxy.cache.manifest_rows import ManifestRow, TagRow
from proxy.clock import Clock
from proxy.config import CacheSettings
from proxy.config.tag_policies import TagPolicies
from proxy.metrics import Metrics
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.negative import MANIFEST, NegativeCache, is_missing
from proxy.upstream.registry import Registry

log = logging.getLogger("gar_proxy.manifests")
TRIGGERS = ("background", "waited", "refresh")
OUTCOMES = ("unchanged", "changed", "gone", "failed")
Pair = tuple[str, str]  # (repository key, tag)


class ManifestSource(Protocol):
    """What the manifest service lends: cached rows and verified fetches."""

    async def cached(self, digest: Digest) -> ManifestRow | None: ...

    async def fetch_digest(self, repo: Repository, digest: Digest) -> ManifestRow: ...

    async def fetch_tag(self, repo: Repository, tag: str) -> ManifestRow: ...


@dataclass(frozen=True)
class Refreshed:
    """What ``refresh`` found: the digest before (None: not cached) and now."""

    before: Digest | None
    after: Digest
    immutable: bool


class TagRevalidations:
    def __init__(
        self,
        settings: CacheSettings,
        index: CacheIndex,
        registry: Registry,
        metrics: Metrics,
        clock: Clock,
        missing: NegativeCache,
        source: ManifestSource,
        immutable_repository: Callable[[Repository], bool] = lambda repo: False,
    ) -> None:
        self.settings = settings
        self.index = index
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.missing = missing
        self.source = source
        self.policies = TagPolicies(settings.tag_policies, settings.tag_ttl)
        self.immutable_repository = immutable_repository
        self._tasks: dict[Pair, asyncio.Task[ManifestRow]] = {}
        self._recheck_at: dict[Pair, float] = {}  # monotonic; a stale tag served unasked
        self._must_wait: set[Pair] = set()  # a background check was refused: tell a client

    def ttl(self, repo: Repository, tag: str) -> float | None:
        """How long ``repo:tag`` is trusted; None: immutable."""
        if self.immutable_repository(repo):
            return None
        return self.policies.ttl(repo.path, tag)

    async def expired(
        self, repo: Repository, tag: str, seen: TagRow, cached: ManifestRow, ttl: float
    ) -> ManifestRow:
        """The answer for a tag past its TTL whose manifest ``cached`` is at hand."""
        pair = (str(repo), tag)
        age = self.clock.time() - seen.verified
        servable_stale = age < self.settings.max_stale
        if servable_stale and self._recheck_at.get(pair, 0.0) > self.clock.monotonic():
            self.metrics.stale()  # upstream failed moments ago: don't wait on it
            return cached
        window = min(ttl + self.settings.revalidate_window, self.settings.max_stale)
        if age < window and pair not in self._must_wait:
            latest = await self._in_background(repo, pair, seen)
            if latest is not None and latest.digest != seen.digest:
                moved = await self.source.cached(latest.digest)  # swapped meanwhile
                cached = moved or cached
            self.metrics.manifest("revalidating")
            return cached
        try:
            row = await asyncio.shield(self._task(repo, pair, "waited"))
        except RegistryError as error:
            if error.code.serve_stale and servable_stale:
                self.metrics.stale()
                return cached
            raise
        self.metrics.manifest("revalidated")
        return row

    async def fetch(self, repo: Repository, tag: str) -> ManifestRow:
        """A tag not cached (or whose manifest went): fetched in the tag's one task."""
        return await asyncio.shield(self._task(repo, (str(repo), tag), "waited"))

    async def refresh(self, repo: Repository, tag: str) -> Refreshed:
        """Ask upstream now, whatever the TTL or policy, and follow it."""
        if self.settings.offline:
            raise RegistryError(
                ErrorCode.UNSUPPORTED, "refresh needs upstream (cache.offline is set)"
            )
        pair = (str(repo), tag)
        while (running := self._tasks.get(pair)) is not None:
            await asyncio.wait([running])  # it may have asked before upstream moved
        before = await self.index.tags.get(*pair)
        row = await asyncio.shield(self._task(repo, pair, "refresh"))
        immutable = self.ttl(repo, tag) is None
        if before is not None and before.digest != row.digest and immutable:
            log.warning(
                "refresh: immutable tag %s:%s moved upstream from %s to %s; the cache "
                "follows it now (check the tag policy or the repository's immutable tags)",
                pair[0], tag, before.digest, row.digest,
            )  # fmt: skip
        return Refreshed(before.digest if before else None, row.digest, immutable)

    def running(self, key: str, tag: str) -> asyncio.Task[ManifestRow] | None:
        """The tag's task, while one runs."""
        return self._tasks.get((key, tag))

    def forget(self, key: str, tag: str) -> None:
        """The tag was purged: drop what is remembered about its checks."""
        self._recheck_at.pop((key, tag), None)
        self._must_wait.discard((key, tag))

    async def settle(self) -> None:
        """Wait for every running revalidation (tests, a graceful stop)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _in_background(self, repo: Repository, pair: Pair, seen: TagRow) -> TagRow | None:
        """Start the tag's task unless one runs; the tag's row now (a task may have
        finished since ``seen`` was read: then it is fresh, or moved)."""
        latest = await self.index.tags.get(*pair)
        if pair in self._tasks or latest is None or latest.verified != seen.verified:
            return latest
        # Its own context: the upstream calls are nobody's request (the log line's count).
        self._task(repo, pair, "background", contextvars.Context())
        return latest

    def _task(
        self, repo: Repository, pair: Pair, trigger: str, context: contextvars.Context | None = None
    ) -> asyncio.Task[ManifestRow]:
        task = self._tasks.get(pair)
        if task is None:
            work = self._run(repo, pair, trigger)
            task = asyncio.get_running_loop().create_task(
                work, name=f"revalidate {pair[0]}:{pair[1]}", context=context
            )
            self._tasks[pair] = task
            task.add_done_callback(lambda done: self._done(pair, done))
        return task

    def _done(self, pair: Pair, task: asyncio.Task[ManifestRow]) -> None:
        if self._tasks.get(pair) is task:
            del self._tasks[pair]
        if not task.cancelled():
            task.exception()  # retrieved: a joiner re-raises it; a background one was counted

    async def _run(self, repo: Repository, pair: Pair, trigger: str) -> ManifestRow:
        seen = await self.index.tags.get(*pair)
        try:
            async with asyncio.timeout(self.settings.fill_timeout):
                if seen is None:
                    return await self._fetch_tag(repo, pair)
                row = await self._revalidate(repo, pair, seen, trigger)
        except RegistryError as error:
            await self._failed(pair, seen, error, trigger)
            raise
        except TimeoutError:
            await self._failed(pair, seen, _timed_out(self.settings.fill_timeout), trigger)
            raise _timed_out(self.settings.fill_timeout) from None
        except Exception:
            log.exception("revalidating %s:%s failed", *pair)
            self.metrics.tag_revalidation(trigger, "failed")
            raise
        self._recheck_at.pop(pair, None)
        self._must_wait.discard(pair)
        return row

    async def _fetch_tag(self, repo: Repository, pair: Pair) -> ManifestRow:
        row = await self.source.fetch_tag(repo, pair[1])
        await self._swap(pair, None, row)
        return row

    async def _swap(self, pair: Pair, expected: Digest | None, row: ManifestRow) -> bool:
        """Point the tag at ``row`` unless someone else wrote it since it was read as
        ``expected`` (a push through the proxy, a purge): their write is newer than
        what this task asked upstream, and must not be moved back."""
        latest = await self.index.tags.get(*pair)  # memoized: no await until put_tag's
        if (latest.digest if latest else None) != expected:
            return False
        await self.index.tags.put(*pair, row.digest, row.media_type)
        return True

    async def _revalidate(
        self, repo: Repository, pair: Pair, seen: TagRow, trigger: str
    ) -> ManifestRow:
        info = await self.registry.head_manifest(repo, pair[1], mt.DEFAULT_ACCEPT)
        if info is None:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {pair[0]}:{pair[1]} is not known",
                detail={"name": repo.path, "reference": pair[1]},
            )
        current = info.digest
        if current == seen.digest:
            row = await self.source.cached(seen.digest)
            if row is not None:
                latest = await self.index.tags.get(*pair)
                if latest is not None and latest.digest == seen.digest:  # not pushed meanwhile
                    await self.index.tags.mark_verified(*pair)
                self.metrics.tag_revalidation(trigger, "unchanged")
                return row
        # Moved (or the cached copy went): the new manifest first, then the pointer.
        if current is None:
            row = await self.source.fetch_tag(repo, pair[1])  # no digest header: by tag
        elif (cached := await self.source.cached(current)) is not None:
            row = cached  # moved to one cached already (latest -> 1.2.3): no GET
            await self.index.scopes.add(pair[0], current)  # the HEAD showed it is in repo
        else:
            row = await self.source.fetch_digest(repo, current)
        await self._swap(pair, seen.digest, row)
        outcome = "unchanged" if row.digest == seen.digest else "changed"
        self.metrics.tag_revalidation(trigger, outcome)
        if outcome == "changed":
            log.info("tag %s:%s moved upstream: %s -> %s", *pair, seen.digest, row.digest)
        return row

    async def _failed(
        self, pair: Pair, seen: TagRow | None, error: RegistryError, trigger: str
    ) -> None:
        key, tag = pair
        if error.code is ErrorCode.MANIFEST_UNKNOWN:
            await self.index.tags.delete(key, tag)
        if is_missing(error):
            self.missing.remember(MANIFEST, key, tag, error)
        if seen is None:
            return  # a miss's fetch: not a revalidation
        gone = error.code is ErrorCode.MANIFEST_UNKNOWN
        self.metrics.tag_revalidation(trigger, "gone" if gone else "failed")
        age = self.clock.time() - seen.verified
        if error.code.serve_stale and age < self.settings.max_stale:
            wait = self.settings.stale_recheck
            self._recheck_at[pair] = self.clock.monotonic() + wait
            log.warning(
                "serving stale tag %s:%s (%.0fs old) for %gs: %s",
                key, tag, age, wait, error.message,
            )  # fmt: skip
        elif not gone and trigger == "background":
            self._must_wait.add(pair)


def _timed_out(limit: float) -> RegistryError:
    return RegistryError(
        ErrorCode.UPSTREAM_TIMEOUT, f"revalidating a tag took over {limit:g}s (cache.fill_timeout)"
    )
