"""Everything with a lifetime, built once per app in its lifespan and closed with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from proxy.cache.blobs import BlobCache
from proxy.cache.cleanstate import Session, clear_state, read_state, write_state
from proxy.cache.index import CacheIndex
from proxy.cache.lock import CacheLock
from proxy.cache.shared import EVENTS as SHARED_EVENTS
from proxy.cache.shared import SharedTier
from proxy.cache.store import BlobStore
from proxy.cache.upload_store import UploadFiles, UploadTable
from proxy.cache.upload_store import recover as recover_uploads
from proxy.clock import SYSTEM, Clock
from proxy.config import Settings
from proxy.gar.repositories import RepositoryApi
from proxy.gar.vulnerabilities import VulnerabilityClient
from proxy.metrics import Metrics
from proxy.services.blob_uploads import UploadService
from proxy.services.blobs import BlobService
from proxy.services.gate import VulnerabilityGate
from proxy.services.instrument import instrument
from proxy.services.listings import ListingService
from proxy.services.locations import LocationResolver
from proxy.services.manifest_writes import ManifestWriteService
from proxy.services.manifests import ManifestService
from proxy.services.mirrors import MirrorTable
from proxy.services.mounts import MountService
from proxy.services.negative import NegativeCache
from proxy.services.repository_checks import RepositoryChecks
from proxy.services.upload_bytes import UploadLimits
from proxy.upstream.auth import AccessTokens
from proxy.upstream.client import Upstream
from proxy.upstream.google_api import GoogleApi
from proxy.upstream.registry import RegistryClient
from proxy.upstream.storage import StorageBucket

log = logging.getLogger("gar_proxy")
FLUSH_INTERVAL = 5.0
# `gar-proxy gc` or another proxy on the same cache changes what is cached without
# telling us: recount the total (one SUM over the blob rows) this often for the gauge.
RECOUNT_INTERVAL = 60.0
# On stop, writes to the shared bucket under way may finish for this long (a lost one
# costs nothing but the next replica's GAR fetch, which writes it again).
SHARED_GRACE = 10.0
OnOpen = Callable[[str, AsyncExitStack], None]


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    index: CacheIndex
    cache: BlobCache
    upstream: Upstream
    registry: RegistryClient
    google: GoogleApi
    repositories: RepositoryApi
    analysis: VulnerabilityClient
    gate: VulnerabilityGate | None  # None: vulnerability_gate.enabled is off
    locations: LocationResolver
    mirrors: MirrorTable
    blobs: BlobService
    manifests: ManifestService
    listings: ListingService
    uploads: UploadService
    mounts: MountService
    manifest_writes: ManifestWriteService
    clock: Clock = SYSTEM
    shared: SharedTier | None = None  # cache.shared is off


def project_domains(settings: Settings) -> frozenset[str]:
    """Domains whose bare names are GAR's domain-scoped projects (DESIGN.md "Naming and
    locations"): ``routing.project_domains``, and the default project's own."""
    domains = set(settings.routing.project_domains)
    project = settings.gcp.project_id or ""
    if ":" in project:
        domains.add(project.split(":")[0])
    return frozenset(domains)


def make_tokens(settings: Settings, clock: Clock = SYSTEM) -> AccessTokens | None:
    if settings.upstream.auth != "gcp":
        return None
    from proxy.upstream.gcp import GoogleTokenSource  # google-auth is only needed for gcp

    return GoogleTokenSource(settings.gcp, timeout=settings.transport.timeout, clock=clock)


def make_upstream(
    settings: Settings,
    tokens: AccessTokens | None,
    clock: Clock = SYSTEM,
    metrics: Metrics | None = None,
) -> Upstream:
    """The upstream client over its sections: who and where, transport, quotas."""
    return Upstream(
        settings.upstream, tokens, transport=settings.transport, quotas=settings.quotas,
        location=settings.routing.location, read_only=settings.gcp.read_only, clock=clock,
        metrics=metrics,
    )  # fmt: skip


def make_shared_tier(
    settings: Settings,
    upstream: Upstream,
    tokens: AccessTokens | None,
    store: BlobStore,
    metrics: Metrics,
) -> SharedTier | None:
    """The bucket of ``cache.shared``, reached with GAR's credentials and connection
    pool; None when it is off (or the cache is offline: the bucket is remote too)."""
    where = settings.cache.shared
    if where is None or settings.cache.offline:
        return None
    api = settings.apis.cloud_storage
    bucket = StorageBucket(upstream.http, tokens, api, where.bucket)
    for event in SHARED_EVENTS:
        metrics.shared_tier.labels(event)  # every series exists from the start
    return SharedTier(bucket, where, store, lambda event: metrics.shared_tier.labels(event).inc())


async def sweep_expired(settings: Settings, cache: BlobCache) -> None:
    """The periodic sweep's age expiry (``cache.max_age``; off at 0)."""
    if settings.cache.max_age > 0:
        await cache.expire(settings.cache.max_age)


def build(
    settings: Settings,
    clock: Clock,
    index: CacheIndex,
    upstream: Upstream,
    tokens: AccessTokens | None,
) -> Services:
    """Every service over the opened resources: plain objects, nothing to close."""
    cache_settings, routing, gar = settings.cache, settings.routing, settings.upstream.is_gar
    offline, metrics = cache_settings.offline, upstream.metrics
    store = BlobStore(cache_settings.dir)
    cache = BlobCache(
        store,
        index,
        max_size=cache_settings.max_size,
        fill_limit=cache_settings.fill_timeout,
        min_free=cache_settings.min_free,
    )
    registry = RegistryClient(upstream)
    google = GoogleApi(upstream.http, tokens)
    api = RepositoryApi(settings.apis.artifact_registry, google)
    asks_api = gar and routing.check_repositories and not offline
    checks = RepositoryChecks(api if asks_api else None, index, clock)
    locations = LocationResolver(
        routing,
        api if gar else None,
        index,
        gar=gar,
        offline=offline,
        default_project=settings.gcp.project_id,
        clock=clock,
        checks=checks,
    )
    # Container Analysis takes only cloud-platform, also for a read-only proxy (GAR.md R6).
    full_scope = GoogleApi(upstream.http, tokens, full_scope=True)
    analysis = VulnerabilityClient(full_scope, settings.apis.container_analysis)
    gate_settings = settings.vulnerability_gate
    gate = VulnerabilityGate(gate_settings, analysis, clock) if gate_settings.enabled else None
    missing = NegativeCache(cache_settings.negative_ttl, clock)  # upstream 404s, shared
    shared = make_shared_tier(settings, upstream, tokens, store, metrics)
    blobs = BlobService(cache, registry, metrics, offline=offline, missing=missing, shared=shared)
    upload_table = UploadTable(index.db)
    upload_files = UploadFiles(cache_settings.dir, floor=cache)  # cache.min_free holds
    server = settings.server
    limits = UploadLimits(
        server.max_upload_sessions,
        server.max_upload_sessions_per_identity,
        server.max_upload_bytes_per_identity,
    )
    uploads = UploadService(registry, cache, upload_table, upload_files, clock, missing, limits)
    mounts = MountService(registry, cache, blobs, uploads, gar=gar, offline=offline)
    instrument(metrics, cache, upstream, tokens, uploads)
    return Services(
        settings=settings,
        metrics=metrics,
        index=index,
        cache=cache,
        upstream=upstream,
        registry=registry,
        google=google,
        repositories=api,
        analysis=analysis,
        gate=gate,
        locations=locations,
        mirrors=MirrorTable(
            routing.mirrors,
            gar=gar,
            tier=settings.upstream.tier,
            project_domains=project_domains(settings),
        ),
        blobs=blobs,
        manifests=ManifestService(
            cache_settings,
            index,
            cache,
            registry,
            metrics,
            clock,
            missing,
            gate=None if gate is None else gate.check,
            immutable_repository=checks.immutable_tags,
        ),
        listings=ListingService(cache_settings, index, registry, clock),
        uploads=uploads,
        mounts=mounts,
        manifest_writes=ManifestWriteService(settings.server, index, registry, mounts, missing),
        clock=clock,
        shared=shared,
    )


async def _flush_forever(
    settings: Settings, index: CacheIndex, cache: BlobCache, metrics: Metrics, clock: Clock
) -> None:
    # The flush cadence is real time (asyncio.sleep): it batches writes, it is no TTL,
    # and a stepped clock's sleep would return at once and spin. What it decides (the
    # once-a-minute recount and age sweep) reads the clock.
    recounted = clock.monotonic()
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await index.flush()
            if clock.monotonic() - recounted >= RECOUNT_INTERVAL:
                recounted = clock.monotonic()
                # Age expiry scans the manifests table: once a minute, not every flush.
                await sweep_expired(settings, cache)
                await index.blobs.recount()
            metrics.cache_bytes.set(index.blobs.total_bytes)
        except Exception:  # the flusher must outlive a transient database error
            log.exception("flushing cache access times failed")


async def _recover(services: Services, lock: CacheLock, stack: AsyncExitStack) -> None:
    """Start-up recovery, only when no other process has the cache open: its temp
    files and upload bytes would look like a crash's leftovers (``proxy.cache.lock``).
    Files and index are reconciled only after a crash or a change by hand since the
    last clean close (``proxy.cache.cleanstate``): that is O(cached blobs). The clean
    close is registered once recovery is done: a start that failed leaves no record
    that would let the next one skip reconciling."""
    root, cache = services.settings.cache.dir, services.cache
    session = Session(root)
    stack.callback(session.end)
    if lock.alone:
        crashed = session.others()
        saved = read_state(root)
        clean = session.tracked and not crashed and saved == await cache.state()
        clear_state(root)  # from here until a clean close, unknown
        report = await cache.recover(full=not clean)
        if any(vars(report).values()):
            log.info("cache recovery: %s", report)
        session.forget(crashed)
        uploads = services.uploads
        await recover_uploads(uploads.table, uploads.files, services.clock.time())
        await uploads.rest_found()  # what survived counts against its owner again
    else:
        log.info("cache %s is open in another process: no recovery", root)
    lock.opened()
    stack.push_async_callback(_close_cleanly, services)


async def _close_cleanly(services: Services) -> None:
    """Record the state a clean close leaves (before the session ends): the next
    start-up may then skip reconciling files and index."""
    root, cache = services.settings.cache.dir, services.cache
    try:
        await services.index.flush()
        await cache.settle()
        if not cache.interrupted:
            write_state(root, await cache.state())
    except Exception:  # the next start reconciles: slower, never wrong
        log.exception("recording the cache state at close failed")


async def _close_shared(settings: Settings, shared: SharedTier) -> None:
    """Writes to the bucket under way get a short grace, then are dropped."""
    await shared.drain(min(settings.server.shutdown_grace, SHARED_GRACE))
    await shared.aclose()


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _opened(name: str, stack: AsyncExitStack) -> None:
    log.debug("opened %s", name)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, clock: Clock = SYSTEM, *, on_open: OnOpen = _opened
) -> AsyncIterator[Services]:
    """The composition root: every service ``serve`` and the CLI commands use, built
    from the settings (each component gets its own group).

    Each resource is registered on one ``AsyncExitStack`` as it opens, so a failure
    at any step closes what came before, in reverse, and a close that raises does not
    keep the others open (the stack runs them all, then raises). ``on_open(name,
    stack)`` is called after each of ``RESOURCES`` is open and registered: a seam for
    tests, which fail there or register a failing close."""
    async with AsyncExitStack() as stack:
        root = settings.cache.dir
        root.mkdir(parents=True, exist_ok=True)
        lock = await CacheLock.acquire(root)  # before the index: held while it is open
        stack.callback(lock.release)
        on_open("lock", stack)
        index = await CacheIndex.open(root / "index.sqlite3", clock)  # a thread of its own
        stack.push_async_callback(index.close)
        on_open("index", stack)
        tokens = make_tokens(settings, clock)
        if tokens is not None and hasattr(tokens, "aclose"):
            stack.push_async_callback(tokens.aclose)
        on_open("tokens", stack)
        upstream = make_upstream(settings, tokens, clock, Metrics(clock))
        stack.push_async_callback(upstream.aclose)
        on_open("upstream", stack)
        services = build(settings, clock, index, upstream, tokens)
        await _recover(services, lock, stack)
        on_open("recovery", stack)
        if services.shared is not None:
            stack.push_async_callback(_close_shared, settings, services.shared)
        on_open("shared", stack)
        stack.push_async_callback(services.cache.fills.aclose)
        # Revalidations are the fills' kin (app-owned, upstream calls): stopped first.
        stack.push_async_callback(services.manifests.tags.aclose)
        on_open("fills", stack)
        flusher = _flush_forever(settings, index, services.cache, services.metrics, clock)
        stack.push_async_callback(_stop, asyncio.create_task(flusher))
        on_open("flusher", stack)
        yield services


RESOURCES = ("lock", "index", "tokens", "upstream", "recovery", "shared", "fills", "flusher")
