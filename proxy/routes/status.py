"""``/``: a status page for people, server-rendered HTML (no script, no framework):
health, the last hour, what is moving now (``status_live``), then the cache.

Every number comes from the same objects ``/metrics`` exports, so the page and a
dashboard agree; the credential source and when its token is refreshed are shown,
never the token.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proxy.auth.access import judged_by, listing_filter
from proxy.human import human_seconds, human_size
from proxy.metrics import Metrics
from proxy.redact import redact
from proxy.routes import status_live
from proxy.routes.admin import admin_allowed
from proxy.routes.common import services
from proxy.services.health import Health
from proxy.version import VERSION

TOP = 10
Visible = Callable[[str], bool] | None
_STYLE = """body{font:15px/1.4 system-ui,sans-serif;margin:2em;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.2em .8em;text-align:left;
border-bottom:1px solid #ddd}th{background:#f4f4f4}.bad{color:#a00}.num{text-align:right}"""


def _row(label: str, element_id: str, value: float, shown: str) -> str:
    # data-value: the exact number, as /metrics has it; the text is for people.
    return (f'<tr><th>{html.escape(label)}</th><td id="{element_id}" '
            f'data-value="{value:.0f}">{html.escape(shown)}</td></tr>')  # fmt: skip


def _bytes(size: float) -> str:
    return f"{human_size(size)} ({size:.0f} bytes)"


def _lookups(metrics: Metrics, outcome: str) -> float:
    return sum(
        metrics.sample("garproxy_cache_lookups_total", {"kind": kind, "outcome": outcome})
        for kind in ("blob", "manifest")
    )


def _cache_table(request: Request) -> str:
    svc = services(request)
    metrics, size, cap = svc.metrics, svc.index.blobs.total_bytes, svc.cache.max_size
    hits, misses = _lookups(metrics, "hit"), _lookups(metrics, "miss")
    ratio = f"{hits / (hits + misses):.1%}" if hits + misses else "no lookups yet"
    saved = metrics.sample("garproxy_blob_bytes_served_from_cache_total")
    fetched = metrics.sample("garproxy_upstream_bytes_fetched_total")
    rows = [
        _row("Cache size", "cache-bytes", size, f"{human_size(size)} of {human_size(cap)} "
             f"({size / cap:.1%})" if cap else human_size(size)),
        _row("Cache hits", "cache-hits", hits, f"{hits:.0f}"),
        _row("Cache misses", "cache-misses", misses, f"{misses:.0f}"),
        _row("Hit ratio", "hit-ratio", hits / (hits + misses) * 100 if hits + misses else 0, ratio),
        _row("Bytes saved upstream", "bytes-saved", saved, _bytes(saved)),
        _row("Bytes fetched upstream", "bytes-fetched", fetched, _bytes(fetched)),
    ]  # fmt: skip
    return "<h2>Cache</h2><table>" + "".join(rows) + "</table>"


def _top_table(metrics: Metrics, visible: Visible) -> str:
    shown = [
        (name, count)
        for name, count in metrics.repositories.most_common()
        if visible is None or visible(name)
    ][:TOP]
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=num>{count}</td>"
        f"<td class=num>{human_size(metrics.repository_bytes[name])}</td></tr>"
        for name, count in shown
    )
    head = "<tr><th>Repository</th><th>Requests</th><th>Sent</th></tr>"
    body = rows or "<tr><td colspan=3>none yet</td></tr>"
    return f'<h2>Top repositories</h2><table id="top-repositories">{head}{body}</table>'


def _errors_table(request: Request, visible: Visible) -> str:
    if visible is not None:  # upstream's messages name repositories: admins only
        body = "<tr><td colspan=3>shown to admin identities</td></tr>"
        return f'<h2>Recent upstream errors</h2><table id="upstream-errors">{body}</table>'
    errors = list(services(request).upstream.recent_errors)[::-1]
    rows = "".join(
        f"<tr><td>{datetime.datetime.fromtimestamp(when, datetime.UTC):%Y-%m-%d %H:%M:%S}Z</td>"
        f"<td>{html.escape(op)}</td><td class=bad>{html.escape(redact(what))}</td></tr>"
        for when, op, what in errors
    )
    body = rows or "<tr><td colspan=3>none</td></tr>"
    return f'<h2>Recent upstream errors</h2><table id="upstream-errors">{body}</table>'


async def _credentials_table(request: Request, detailed: bool) -> str:
    """The upstream, the credential source and its token's refresh: like ``/readyz``'s
    detail, for admins (or loopback clients) only when client auth is on."""
    if not detailed:
        body = "<tr><td>shown to admin identities</td></tr>"
        return f"<h2>Upstream</h2><table>{body}</table>"
    health: Health = request.app.state.health
    check = await health.credentials()
    refresh = check.extra.get("token_refresh_in_s")
    expiry = "n/a" if refresh is None else f"refreshed in {human_seconds(refresh)}"
    state = "" if check.ok else " class=bad"
    return (
        "<h2>Upstream</h2><table>"
        f"<tr><th>Upstream</th><td>{_shown(services(request).settings.upstream.url)}</td></tr>"
        f'<tr><th>Credentials</th><td id="credentials"{state}>{_shown(check.detail)}</td></tr>'
        f'<tr><th>Token</th><td id="token-expiry">{html.escape(expiry)}</td></tr></table>'
    )


def _shown(text: str) -> str:
    return html.escape(redact(text))


async def page(request: Request) -> Response:
    """The page; with rules in force, the repositories listed are those the caller may
    pull (an admin sees all)."""
    metrics = services(request).metrics
    visible = listing_filter(request.scope)
    health: Health = request.app.state.health
    # The upstream's URL, state and credentials, like /readyz's detail: with client auth,
    # admin identities and loopback clients only.
    access, identity = judged_by(request.scope)
    detailed = access.authenticator is None or access.is_admin(identity)
    detailed = detailed or admin_allowed(request)
    body = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>gar-proxy</title>"
        f"<style>{_STYLE}</style></head><body><h1>gar-proxy "
        f'<small id="version">{html.escape(VERSION)}</small></h1>'
        f"{await status_live.health_table(health, detailed)}"
        f"{status_live.chart(metrics.activity)}"
        f"{status_live.transfers_table(services(request), named=visible is None)}"
        f"{_cache_table(request)}{_top_table(metrics, visible)}"
        f"{await _credentials_table(request, detailed)}"
        f"{_errors_table(request, visible)}"
        '<p><a href="/metrics">metrics</a> · <a href="/readyz">readiness</a></p></body></html>'
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})
