"""Prometheus metrics, one registry per app (tests run several apps in one process).

Every label takes a bounded set of values: route kinds, operations, status classes,
outcomes; never a repository, a digest or a URL. The per-repository view an operator
wants (top repositories) is on the status page, read from the cache index.
"""

from __future__ import annotations

import collections
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from proxy import requestcontext
from proxy.activity import Activity
from proxy.clock import SYSTEM, Clock
from proxy.version import VERSION

# Repositories tracked for the status page (not exported: a label per repository
# would be unbounded); past this many, new names are not added.
MAX_TRACKED_REPOSITORIES = 1000
_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600)


def status_class(status: int | None) -> str:
    """``2xx``..``5xx``, or ``error`` when no answer came (a transport failure)."""
    return f"{status // 100}xx" if status else "error"


class Metrics:
    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.registry = r = CollectorRegistry()
        # Requests and bytes per minute for the status page's chart (not exported).
        self.activity = Activity(clock)
        self._children: dict[tuple[object, ...], Any] = {}
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        build = Gauge("gar_proxy_build_info", "gar-proxy version", ["version"], registry=r)
        build.labels(VERSION).set(1)
        self.requests = Counter(
            "garproxy_requests", "Requests answered", ["method", "kind", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "garproxy_request_duration_seconds",
            "Time to answer a request, until its last body byte was handed to the server",
            ["kind"],
            buckets=_SECONDS,
            registry=r,
        )
        self.cache = Counter(
            "garproxy_cache_lookups",
            "Cache lookups by outcome (hit, miss, revalidated, revalidating: answered from "
            "the cache while the tag revalidates in the background)",
            ["kind", "outcome"],
            registry=r,
        )
        self.fill_joins = Counter(
            "garproxy_cache_fill_joins",
            "Blob misses that joined a fill already running (no upstream GET of their own)",
            registry=r,
        )
        self.upstream_fetches = Counter(
            "garproxy_upstream_fetches", "Upstream GETs started", ["kind"], registry=r
        )
        self.stale_served = Counter(
            "garproxy_stale_tags_served", "Tags served stale because upstream failed", registry=r
        )
        self.tag_revalidations = Counter(
            "garproxy_tag_revalidations",
            "Tag revalidations upstream by trigger (background, waited, refresh) and outcome "
            "(unchanged, changed, gone, failed)",
            ["trigger", "outcome"],
            registry=r,
        )
        for trigger in ("background", "waited", "refresh"):
            for outcome in ("unchanged", "changed", "gone", "failed"):
                self.tag_revalidations.labels(trigger, outcome)  # every series from the start
        self.bytes_served = Counter(
            "garproxy_bytes_served", "Body bytes sent to clients", ["source"], registry=r
        )
        self.scheduled_warms = Counter(
            "garproxy_scheduled_warms", "Scheduled warm runs ([[warm]])", ["outcome"], registry=r
        )
        self.bytes_from_cache = Counter(
            "garproxy_blob_bytes_served_from_cache",
            "Blob bytes sent to clients from verified cache files (not a fill)",
            registry=r,
        )
        self.bytes_fetched = Counter(
            "garproxy_upstream_bytes_fetched", "Blob bytes downloaded from upstream", registry=r
        )
        self.bytes_pushed = Counter(
            "garproxy_bytes_pushed", "Blob bytes clients uploaded through the proxy", registry=r
        )
        self.cache_bytes = Gauge("garproxy_cache_bytes", "Bytes of blobs in the cache", registry=r)
        self.cache_max_bytes = Gauge(
            "garproxy_cache_max_bytes", "The cache's size cap (cache.max_size)", registry=r
        )
        self.ready = Gauge(
            "garproxy_ready",
            "1 if the proxy can serve (cache index and disk usable), by the last check",
            registry=r,
        )
        self.upstream_up = Gauge(
            "garproxy_upstream_up",
            "1 if the last upstream check (GET /v2/ with the credentials) succeeded",
            registry=r,
        )
        self.evictions = Counter("garproxy_cache_evictions", "Blobs evicted", registry=r)
        self.evicted_bytes = Counter(
            "garproxy_cache_evicted_bytes", "Bytes of blobs evicted", registry=r
        )
        self.active_fills = Gauge("garproxy_active_fills", "Blob fills running", registry=r)
        self.upload_sessions = Gauge("garproxy_upload_sessions", "Upload sessions open", registry=r)
        self.shared_tier = Counter(
            "garproxy_shared_tier",
            "Shared blob tier (cache.shared): hit, miss, error (unreachable), corrupt "
            "(a copy not used), uploaded, upload_failed",
            ["event"],
            registry=r,
        )
        self._upstream(r)
        self.repositories: collections.Counter[str] = collections.Counter()
        self.repository_bytes: collections.Counter[str] = collections.Counter()

    def _upstream(self, r: CollectorRegistry) -> None:
        self.upstream_seconds = Histogram(
            "garproxy_upstream_request_duration_seconds",
            "Upstream calls until the answer's headers, by operation and status class",
            ["operation", "status_class"],
            buckets=_SECONDS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "garproxy_upstream_errors",
            "Upstream calls that failed: transport, 5xx or 429 answers",
            ["operation", "reason"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "garproxy_upstream_retries", "Upstream calls retried", ["reason"], registry=r
        )
        self.ratelimit_waits = Counter(
            "garproxy_ratelimit_waits", "Upstream calls that waited for quota", registry=r
        )
        self.ratelimit_wait_seconds = Counter(
            "garproxy_ratelimit_wait_seconds", "Time spent waiting for quota", registry=r
        )
        self.token_refreshes = Counter(
            "garproxy_token_refreshes", "Access or registry tokens obtained", ["kind"], registry=r
        )
        self.credential_failures = Counter(
            "garproxy_credential_failures",
            "Failures to obtain a token, or upstream refusing ours (401/403)",
            ["kind"],
            registry=r,
        )
        # A labelled child exists only once used; a Prometheus would store no series for
        # these until the first failure, and the dashboard would say "No data", not 0.
        # One zero child each (bounded values the code uses) makes the series exist.
        self.upstream_errors.labels("blob_get", "5xx")
        self.upstream_retries.labels("5xx")
        for kind in ("registry", "google"):
            self.token_refreshes.labels(kind)
            self.credential_failures.labels(kind)

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: ``labels`` costs more than the
        increment on the per-request path. Label values here are bounded."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def request_done(self, method: str, kind: str, status: int, seconds: float) -> None:
        self._child(self.requests, method, kind, str(status)).inc()
        self._child(self.request_seconds, kind).observe(seconds)

    def blob_hit(self) -> None:
        self._child(self.cache, "blob", "hit").inc()
        requestcontext.note_cache("hit")

    def blob_miss(self, *, joined: bool = False) -> None:
        """A blob not in the cache; ``joined``: a fill for it was already running."""
        self.cache.labels("blob", "miss").inc()
        if joined:
            self.fill_joins.inc()
        requestcontext.note_cache("fill-join" if joined else "miss")

    def manifest(self, outcome: str) -> None:
        self._child(self.cache, "manifest", outcome).inc()
        requestcontext.note_cache(outcome)

    def tag_revalidation(self, trigger: str, outcome: str) -> None:
        self._child(self.tag_revalidations, trigger, outcome).inc()

    def stale(self) -> None:
        self.stale_served.inc()
        requestcontext.note_cache("stale")

    def upstream_blob_fetch(self) -> None:
        self.upstream_fetches.labels("blob").inc()

    def upstream_manifest_fetch(self) -> None:
        self.upstream_fetches.labels("manifest").inc()

    def repository_request(self, name: str, sent: int) -> None:
        """A pull request for the status page's top repositories (bounded)."""
        if name in self.repositories or len(self.repositories) < MAX_TRACKED_REPOSITORIES:
            self.repositories[name] += 1
            self.repository_bytes[name] += sent

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
