"""Connects the components' hooks to the app's metrics, in one place.

The cache, the fills, the upstream authorizer and the Google token source each
expose a plain callback (``on_evict``, ``on_finished``, ``observe``) and know nothing
of Prometheus; gauges read live state when scraped.
"""

from __future__ import annotations

from proxy.cache.blobs import BlobCache
from proxy.cache.fills import Fill
from proxy.metrics import Metrics
from proxy.services.blob_uploads import UploadService
from proxy.upstream.auth import AccessTokens
from proxy.upstream.client import Upstream


def instrument(
    metrics: Metrics,
    cache: BlobCache,
    upstream: Upstream,
    tokens: AccessTokens | None,
    uploads: UploadService,
) -> None:
    def evicted(blobs: int, size: int) -> None:
        metrics.evictions.inc(blobs)
        metrics.evicted_bytes.inc(size)

    def filled(fill: Fill) -> None:
        metrics.bytes_fetched.inc(fill.written)

    def token(kind: str, obtained: bool) -> None:
        counter = metrics.token_refreshes if obtained else metrics.credential_failures
        counter.labels(kind).inc()

    cache.on_evict = evicted
    cache.fills.on_finished = filled
    upstream.auth.observe = token
    if tokens is not None and hasattr(tokens, "observe"):
        tokens.observe = token
    metrics.cache_max_bytes.set(cache.max_size)
    # Read when scraped, so /metrics and the status page show the same total.
    metrics.cache_bytes.set_function(lambda: cache.index.blobs.total_bytes)
    metrics.active_fills.set_function(lambda: len(cache.fills))
    metrics.upload_sessions.set_function(uploads.open_sessions)
