"""What the upstream client tells about its calls: metrics, the status page's recent
errors, the request's own record and a debug line, never a secret.

``proxy.upstream.client.Upstream`` reports each HTTP request, each refusal of the
proxy's credentials, each retry and each wait for quota here; a test can watch one
``Observer`` on its own (a ``Metrics`` and a clock)::

    >>> from proxy.clock import ManualClock
    >>> seen = Observer(Metrics(), ManualClock(100.0))
    >>> seen.failed("blob_get", "HTTP 503")
    >>> list(seen.recent_errors)
    [(100.0, 'blob_get', 'HTTP 503')]
"""

from __future__ import annotations

import collections
import logging

import httpx

from proxy import requestcontext
from proxy.clock import Clock
from proxy.metrics import Metrics, status_class
from proxy.oci.names import Repository
from proxy.redact import redact, without_secret_params
from proxy.upstream.calls import operation

log = logging.getLogger("gar_proxy.upstream")
RECENT_ERRORS = 20


def host(url: httpx.URL) -> str:
    """``host[:port]`` of an upstream URL, never its userinfo (for logs)."""
    return redact(f"{url.host}:{url.port}" if url.port else url.host)


class Observer:
    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self.metrics = metrics
        self.clock = clock
        # The last few failed calls, for the status page: (time, operation, what).
        self.recent_errors: collections.deque[tuple[float, str, str]] = collections.deque(
            maxlen=RECENT_ERRORS
        )

    def failed(self, op: str, what: str) -> None:
        self.recent_errors.append((self.clock.time(), op, what))

    def request(
        self,
        request: httpx.Request,
        status: int | None,
        seconds: float,
        failure: str | None = None,
        label: str | None = None,
        location: str | None = None,
    ) -> None:
        """One HTTP request: its duration, a failure counted and remembered, the
        request's count of upstream calls, a debug line (``label`` stands for a URL
        that is a credential)."""
        op = operation(request.method, request.url.path)
        self.metrics.upstream_seconds.labels(op, status_class(status)).observe(seconds)
        if status is None:
            self.metrics.upstream_errors.labels(op, "transport").inc()
            self.failed(op, failure or "transport error")
        elif status == 429 or status >= 500:
            self.metrics.upstream_errors.labels(op, str(status) if status == 429 else "5xx").inc()
            self.failed(op, f"HTTP {status}")
        requestcontext.note_upstream_call(status, host(request.url), location)
        if log.isEnabledFor(logging.DEBUG):
            url = label or without_secret_params(str(request.url))
            fields = {"method": request.method, "url": url,
                      "operation": op, "status": status, "error": failure,
                      "duration_ms": round(seconds * 1000, 1),
                      "request_id": requestcontext.request_id()}  # fmt: skip
            log.debug("upstream call", extra=fields)

    def refused(self, method: str, url: str, status: int) -> None:
        """The upstream refused the proxy's credentials after every token trade."""
        what = f"upstream_{status}"
        self.metrics.credential_failures.labels(what).inc()
        self.failed(operation(method, httpx.URL(url).path), what)

    def retrying(self, reason: str) -> None:
        """Another try: ``transport``, ``auth`` (a token trade) or a status class."""
        self.metrics.upstream_retries.labels(reason).inc()

    def waited(self, repo: Repository, location: str, seconds: float) -> None:
        """A request waited ``seconds`` for quota."""
        if seconds:
            self.metrics.ratelimit_waits.inc()
            self.metrics.ratelimit_wait_seconds.inc(seconds)
            log.info("rate limit: waited %.2fs for quota (%s/%s)", seconds, repo.project, location)

    def backing_off(
        self, why: str, repo: Repository, base: str, attempt: int, delay: float
    ) -> None:
        """A pause of ``delay`` seconds before try ``attempt`` + 1."""
        where, repository = host(httpx.URL(base)), repo.path
        log.warning(
            "upstream %s for %s at %s; retry %d in %.2fs", why, repository, where, attempt, delay,
            extra={"request_id": requestcontext.request_id(), "repository": repository,
                   "upstream_host": where, "retry": attempt},
        )  # fmt: skip
