"""Every answered request: counted (method, route kind, status: bounded labels) and
written as one log line with what it did (``proxy.requestcontext``).

A plain ASGI middleware, so it sees the status a route, an error handler or a 404
produced, and what streaming responses send, without wrapping bodies.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy import requestcontext
from proxy.http.server import ZEROCOPY
from proxy.logs import event_record
from proxy.metrics import Metrics

log = logging.getLogger("gar_proxy.access")
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"})
_KINDS = (
    (re.compile(r"^/v2/?$"), "base"),
    (re.compile(r"^/v2/.+/blobs/uploads(/.*)?$"), "upload"),
    (re.compile(r"^/v2/.+/blobs/[^/]+$"), "blob"),
    (re.compile(r"^/v2/.+/manifests/[^/]+$"), "manifest"),
    (re.compile(r"^/v2/.+/tags/list$"), "tags"),
    (re.compile(r"^/v2/.+/referrers/[^/]+$"), "referrers"),
    (re.compile(r"^/(healthz|readyz|metrics)$"), "ops"),
    (re.compile(r"^/$"), "status"),
)
# Probes and scrapes arrive every few seconds; their lines are for debugging only.
_QUIET_KINDS = frozenset({"ops", "status"})
_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# The same patterns as one: alternatives are tried in order, so the first kind that
# matches wins, as in a loop over _KINDS, in one call.
_KIND = re.compile("|".join(f"(?P<{kind}>{pattern.pattern})" for pattern, kind in _KINDS))


def route_kind(path: str) -> str:
    """The kind of route a path is, for metric labels (never the path itself).

    >>> route_kind("/v2/p/r/i/blobs/sha256:ab"), route_kind("/v2/p/r/i/blobs/uploads/")
    ('blob', 'upload')
    >>> route_kind("/v2/"), route_kind("/healthz"), route_kind("/"), route_kind("/x")
    ('base', 'ops', 'status', 'other')
    """
    matched = _KIND.match(path)
    return (matched.lastgroup or "other") if matched else "other"


def _metrics(scope: Scope) -> Metrics | None:
    """The app's metrics (its lifespan made them; absent if start-up failed)."""
    services = getattr(scope["app"].state, "services", None)
    return getattr(services, "metrics", None)


def _incoming_id(scope: Scope) -> str:
    """The caller's X-Request-Id when it is a sane token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == _ID_HEADER:
            text = str(value.decode("latin-1"))
            if _VALID_ID.match(text):
                return text
    return requestcontext.new_request_id()


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = requestcontext.RequestContext(_incoming_id(scope))
        token = requestcontext.current.set(context)
        status = 500  # an exception that escapes every handler is what the server answers
        sent = received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        # Only a push's bytes are counted (kind upload); a pull's receive is left bare.
        reading = receive if scope["method"] in ("GET", "HEAD") else counted

        async def observed(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [*message.get("headers", ()), (_ID_HEADER, context.request_id.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == ZEROCOPY:
                sent += int(message["count"])
            await send(message)

        try:
            await self.app(scope, reading, observed)
        finally:
            requestcontext.current.reset(token)
            # The repository as GAR knows it when a route resolved one (one entry per
            # repository however spelt), else the name as the client sent it.
            if context.repository is None:
                context.repository = scope.get("path_params", {}).get("name")
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in METHODS else "other"
            kind = route_kind(scope["path"])
            metrics = _metrics(scope)
            if metrics is not None:
                metrics.request_done(method, kind, status, seconds)
                _count_bytes(metrics, kind, context, sent, received)
                if kind not in _QUIET_KINDS:  # the status page's chart: registry traffic
                    metrics.activity.add(sent)
            _log_request(scope, context, method, kind, status, sent, seconds)


def _count_bytes(
    metrics: Metrics, kind: str, context: requestcontext.RequestContext, sent: int, received: int
) -> None:
    if kind in ("blob", "manifest") and context.cache is not None and context.repository:
        metrics.repository_request(context.repository, sent)
    if kind == "blob" and context.cache == "hit":
        metrics.bytes_from_cache.inc(sent)  # what upstream was spared
    elif kind == "upload":
        metrics.bytes_pushed.inc(received)


def _log_request(
    scope: Scope,
    context: requestcontext.RequestContext,
    method: str,
    kind: str,
    status: int,
    sent: int,
    seconds: float,
) -> None:
    level = logging.DEBUG if kind in _QUIET_KINDS else logging.INFO
    if status >= 400:
        level = failure_level(status, context.upstream_status)
    if not log.isEnabledFor(level):
        return
    params: dict[str, Any] = scope.get("path_params", {})
    fields = {
        "method": method,
        "route": kind,
        "repository": params.get("name"),
        "reference": params.get("reference") or params.get("digest"),
        "status": status,
        "bytes": sent,
        "duration_ms": round(seconds * 1000, 1),
        "cache": context.cache,
        "upstream_calls": context.upstream_calls,
        "request_id": context.request_id,
        # Who asked (client auth): a lower tier's identity shows in an upper tier's log.
        "identity": scope.get("state", {}).get("identity"),
    }
    if status >= 400:  # why: the answer's error, and where upstream it went
        fields["error_code"], fields["error"] = context.error_code, context.error
        if context.upstream_calls:
            fields["upstream_status"] = context.upstream_status
            fields["upstream_host"] = context.upstream_host
            fields["upstream_location"] = context.upstream_location
    log.handle(event_record(log, level, "request", fields))


def failure_level(status: int, upstream_status: int | None) -> int:
    """A failed request is a warning, unless it failed for the client's own doing: a
    4xx the proxy decided (bad name, digest or range, missing credentials, no right) or
    one upstream gave about the client's request (not found). Upstream refusing the
    proxy's own credentials (401/403), rate limits and 5xx are the operator's business.

    >>> [logging.getLevelName(failure_level(s, u)) for s, u in
    ...  [(404, 404), (400, None), (401, None), (403, 403), (429, 429), (502, None)]]
    ['INFO', 'INFO', 'INFO', 'WARNING', 'WARNING', 'WARNING']
    """
    if status >= 500 or status == 429:
        return logging.WARNING
    if upstream_status in (401, 403):
        return logging.WARNING
    return logging.INFO
