"""What one client request did, carried in a contextvar from the request middleware
(``proxy.routes.observe``) to the services and the upstream client, and written in
the request's one log line: its id, the cache outcome, the upstream calls it made,
and for a request that failed, why: the error it was answered with and the last
upstream answer (status, host, location).

Outside a request (the CLI, a fill task started by another request) there is no
context and the notes go nowhere. A fill task copies the context of the request
that started it, so its upstream calls count for that request only while it runs.
"""

from __future__ import annotations

import contextvars
import random
from dataclasses import dataclass

# Outcomes by how much they say about upstream: a request that joined a fill and
# then hit keeps "fill-join"; a later, weaker note never hides a stronger one.
_RANK = {"hit": 0, "revalidating": 1, "revalidated": 1, "stale": 2, "fill-join": 3, "miss": 4}


@dataclass
class RequestContext:
    request_id: str
    cache: str | None = None
    upstream_calls: int = 0
    repository: str | None = None
    error_code: str | None = None  # the wire code the client was answered with
    error: str | None = None  # its message (already redacted where it quotes upstream)
    upstream_status: int | None = None  # the last upstream answer; None: none, or no answer
    upstream_host: str | None = None
    upstream_location: str | None = None


current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "gar_proxy_request", default=None
)


def new_request_id() -> str:
    # 16 hex digits, as uuid4().hex[:16] gave, without a getrandom(2) per request: an
    # id needs to be unique among a day's lines, not unpredictable.
    return f"{random.getrandbits(64):016x}"


def note_cache(outcome: str) -> None:
    """Record the cache outcome (hit, miss, fill-join, stale, revalidated, revalidating:
    answered from the cache while a background task revalidates)."""
    context = current.get()
    if context is None:
        return
    if context.cache is None or _RANK.get(outcome, 0) >= _RANK.get(context.cache, 0):
        context.cache = outcome


def note_upstream_call(
    status: int | None = None, host: str | None = None, location: str | None = None
) -> None:
    """One upstream call: counted, and its answer kept (the last one wins)."""
    context = current.get()
    if context is not None:
        context.upstream_calls += 1
        context.upstream_status, context.upstream_host = status, host
        context.upstream_location = location


def note_error(code: str, message: str) -> None:
    """The error the client is answered with (the one error handler calls this)."""
    context = current.get()
    if context is not None:
        context.error_code, context.error = code, message


def request_id() -> str | None:
    context = current.get()
    return context.request_id if context is not None else None
