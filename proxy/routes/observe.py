"""Counting every answered request: by method, route kind and status (bounded labels).

A plain ASGI middleware, so it sees the status a route, an error handler or a 404
produced, and what streaming responses send, without wrapping bodies.
"""

from __future__ import annotations

import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.metrics import Metrics

METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"})
_KINDS = (
    (re.compile(r"^/v2/?$"), "base"),
    (re.compile(r"^/v2/.+/blobs/uploads(/.*)?$"), "upload"),
    (re.compile(r"^/v2/.+/blobs/[^/]+$"), "blob"),
    (re.compile(r"^/v2/.+/manifests/[^/]+$"), "manifest"),
    (re.compile(r"^/v2/.+/tags/list$"), "tags"),
    (re.compile(r"^/v2/.+/referrers/[^/]+$"), "referrers"),
    (re.compile(r"^/(healthz|readyz|metrics)$"), "ops"),
)


def route_kind(path: str) -> str:
    """The kind of route a path is, for metric labels (never the path itself).

    >>> route_kind("/v2/p/r/i/blobs/sha256:ab"), route_kind("/v2/p/r/i/blobs/uploads/")
    ('blob', 'upload')
    """
    for pattern, kind in _KINDS:
        if pattern.match(path):
            return kind
    return "other"


def _metrics(scope: Scope) -> Metrics | None:
    """The app's metrics (its lifespan made them; absent if start-up failed)."""
    services = getattr(scope["app"].state, "services", None)
    return getattr(services, "metrics", None)


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler is what the server answers

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            metrics = _metrics(scope)
            if metrics is not None:
                method = scope["method"] if scope["method"] in METHODS else "other"
                kind = route_kind(scope["path"])
                metrics.request_done(method, kind, status, time.perf_counter() - started)
