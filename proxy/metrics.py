"""Prometheus metrics, one registry per app (tests run several apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "garproxy_requests", "Requests answered", ["method", "kind", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "garproxy_request_duration_seconds",
            "Time to answer a request, until its last body byte was handed to the server",
            ["kind"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
            registry=r,
        )
        self.cache = Counter(
            "garproxy_cache_lookups", "Cache lookups by outcome", ["kind", "outcome"], registry=r
        )
        self.upstream_fetches = Counter(
            "garproxy_upstream_fetches", "Upstream GETs started", ["kind"], registry=r
        )
        self.stale_served = Counter(
            "garproxy_stale_tags_served", "Tags served stale because upstream failed", registry=r
        )
        self.bytes_served = Counter(
            "garproxy_bytes_served", "Body bytes sent to clients", ["source"], registry=r
        )
        self.scheduled_warms = Counter(
            "garproxy_scheduled_warms", "Scheduled warm runs ([[warm]])", ["outcome"], registry=r
        )
        self.cache_bytes = Gauge("garproxy_cache_bytes", "Bytes of blobs in the cache", registry=r)

    def request_done(self, method: str, kind: str, status: int, seconds: float) -> None:
        self.requests.labels(method, kind, str(status)).inc()
        self.request_seconds.labels(kind).observe(seconds)

    def blob_hit(self) -> None:
        self.cache.labels("blob", "hit").inc()

    def blob_miss(self) -> None:
        self.cache.labels("blob", "miss").inc()

    def manifest(self, outcome: str) -> None:
        self.cache.labels("manifest", outcome).inc()

    def upstream_blob_fetch(self) -> None:
        self.upstream_fetches.labels("blob").inc()

    def upstream_manifest_fetch(self) -> None:
        self.upstream_fetches.labels("manifest").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
