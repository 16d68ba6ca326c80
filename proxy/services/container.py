"""Everything with a lifetime, built once per app in its lifespan and closed with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.cache.blobs import BlobCache
from proxy.cache.index import CacheIndex
from proxy.cache.lock import CacheLock
from proxy.cache.store import BlobStore
from proxy.cache.uploads import UploadFiles, UploadTable
from proxy.cache.uploads import recover as recover_uploads
from proxy.config import Settings
from proxy.gar.repositories import RepositoryApi
from proxy.metrics import Metrics
from proxy.services.blobs import BlobService
from proxy.services.listings import ListingService
from proxy.services.locations import LocationResolver
from proxy.services.manifests import ManifestService
from proxy.services.mounts import MountService
from proxy.services.pushes import PushService
from proxy.services.uploads import UploadService
from proxy.upstream.auth import AccessTokens
from proxy.upstream.client import Upstream
from proxy.upstream.google_api import GoogleApi
from proxy.upstream.registry import RegistryClient

log = logging.getLogger("gar_proxy")
FLUSH_INTERVAL = 5.0
# `gar-proxy gc` or another proxy on the same cache changes what is cached without
# telling us: recount the total (one SUM over the blob rows) this often for the gauge.
RECOUNT_INTERVAL = 60.0


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    index: CacheIndex
    cache: BlobCache
    upstream: Upstream
    registry: RegistryClient
    locations: LocationResolver
    blobs: BlobService
    manifests: ManifestService
    listings: ListingService
    uploads: UploadService
    mounts: MountService
    pushes: PushService


def make_tokens(settings: Settings) -> AccessTokens | None:
    if settings.auth != "gcp":
        return None
    from proxy.upstream.gcp import GoogleTokenSource  # google-auth is only needed for gcp

    return GoogleTokenSource(settings)


async def _flush_forever(index: CacheIndex, cache: BlobCache, metrics: Metrics) -> None:
    recounted = time.monotonic()
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await index.flush()
            if time.monotonic() - recounted >= RECOUNT_INTERVAL:
                recounted = time.monotonic()
                await index.refresh_total()
            metrics.cache_bytes.set(index.total_bytes)
        except Exception:  # the flusher must outlive a transient database error
            log.exception("flushing cache access times failed")


async def _recover(
    settings: Settings, cache: BlobCache, uploads: UploadTable, files: UploadFiles
) -> CacheLock:
    """Start-up recovery, only when no other process has the cache open: its temp
    files and upload bytes would look like a crash's leftovers (``proxy.cache.lock``)."""
    lock = await CacheLock.acquire(settings.cache_dir)
    try:
        if lock.alone:
            report = await cache.recover()
            if any(vars(report).values()):
                log.info("cache recovery: %s", report)
            await recover_uploads(uploads, files)
        else:
            log.info("cache %s is open in another process: no recovery", settings.cache_dir)
        lock.opened()
    except BaseException:
        lock.release()
        raise
    return lock


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    store = BlobStore(settings.cache_dir)
    index = await CacheIndex.open(settings.cache_dir / "index.sqlite3")
    metrics = Metrics()
    cache = BlobCache(
        store, index, max_size=settings.max_size, fill_limit=settings.fill_timeout_seconds
    )
    tokens = make_tokens(settings)
    upstream = Upstream(settings, tokens)
    registry = RegistryClient(upstream)
    google = GoogleApi(upstream.http, tokens)
    api = RepositoryApi(settings.metadata_api_url, google) if settings.is_gar else None
    locations = LocationResolver(settings, api, index)
    blobs = BlobService(cache, registry, metrics, offline=settings.offline)
    upload_table, upload_files = UploadTable(index.db), UploadFiles(settings.cache_dir)
    uploads = UploadService(registry, cache, upload_table, upload_files)
    mounts = MountService(settings, registry, cache, blobs, uploads)
    services = Services(
        settings=settings,
        metrics=metrics,
        index=index,
        cache=cache,
        upstream=upstream,
        registry=registry,
        locations=locations,
        blobs=blobs,
        manifests=ManifestService(settings, index, cache, registry, metrics),
        listings=ListingService(settings, index, registry),
        uploads=uploads,
        mounts=mounts,
        pushes=PushService(settings, index, registry, mounts),
    )
    lock = await _recover(settings, cache, upload_table, upload_files)
    flusher = asyncio.create_task(_flush_forever(index, cache, metrics))
    try:
        yield services
    finally:
        flusher.cancel()
        await cache.fills.aclose()
        await upstream.aclose()
        if tokens is not None and hasattr(tokens, "aclose"):
            await tokens.aclose()
        await index.close()
        lock.release()
