"""The status page's live parts: how the proxy is doing now (uptime, readiness, the
upstream's state), what it is moving now (fills and uploads with their progress) and
the last hour (requests and bytes per minute as a server-drawn SVG chart: no script).

Every number keeps its exact value in ``data-value``, as the rest of the page does.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from proxy.activity import Activity
from proxy.human import human_seconds, human_size
from proxy.services.container import Services
from proxy.services.health import Health

CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 600, 60, 1


def _row(label: str, element_id: str, shown: str, value: float | str, bad: bool = False) -> str:
    state = " class=bad" if bad else ""
    return (f'<tr><th>{html.escape(label)}</th><td id="{element_id}"{state} '
            f'data-value="{html.escape(str(value))}">{html.escape(shown)}</td></tr>')  # fmt: skip


async def health_table(health: Health, detailed: bool = True) -> str:
    """Uptime, readiness and the upstream's state; its URL and reason only ``detailed``."""
    uptime = health.clock.time() - health.started
    ready, checks = await health.ready()
    why = "; ".join(c.detail for c in checks.values() if not c.ok)
    upstream = health.upstream_state
    state = upstream.state if upstream else "not checked yet"
    line = upstream.line() if upstream else "the first check runs at start"
    if not detailed:
        line = "detail shown to admin identities"
    if health.checked_at is not None:
        line += f" (checked {human_seconds(max(health.clock.time() - health.checked_at, 0))} ago)"
    rows = [
        _row("Uptime", "uptime", human_seconds(uptime), round(uptime)),
        _row("Ready", "ready", "yes" if ready else f"no: {why}", int(ready), bad=not ready),
        _row("Upstream", "upstream-state", f"{state}: {line}", state,
             bad=upstream is not None and state not in ("up", "offline")),
    ]  # fmt: skip
    return "<h2>Health</h2><table>" + "".join(rows) + "</table>"


def _progress(done: int, total: int | None) -> str:
    if not total:
        return f"{human_size(done)} so far"
    share = min(done / total, 1.0)
    return (f'<progress max="{total}" value="{done}"></progress> '
            f"{share:.0%} of {human_size(total)}")  # fmt: skip


def transfers_table(services: Services, *, named: bool = True) -> str:
    """Fills and uploads running now; with rules in force a non-admin sees how many,
    not which (their repositories may be ones it cannot pull). An upload shows who
    pushes it, never its session id (the key to it)."""
    fills, uploads = services.cache.fills.running(), services.uploads.live()
    if not named:
        count = (f"<tr><td colspan=4>{len(fills)} fill(s) and {len(uploads)} upload(s); "
                 "which ones is shown to admin identities</td></tr>")  # fmt: skip
        return f'<h2>In progress</h2><table id="in-progress">{count}</table>'
    now = services.uploads.clock.time()
    rows = [
        f'<tr class=fill data-value="{fill.written}"><td>fill</td>'
        f"<td>{html.escape(fill.origin or '-')}</td><td>{html.escape(str(fill.digest)[:19])}</td>"
        f"<td>{_progress(fill.written, fill.size)}</td></tr>"
        for fill in fills
    ]
    rows += [
        f'<tr class=upload data-value="{session.offset}"><td>upload</td>'
        f"<td>{html.escape(session.row.repo)}</td><td>{html.escape(session.row.owner or '-')}</td>"
        f"<td>{human_size(session.offset)} received, open "
        f"{human_seconds(max(now - session.row.created, 0))}</td></tr>"
        for session in uploads
    ]
    head = "<tr><th>Kind</th><th>Repository</th><th>Blob or pusher</th><th>Progress</th></tr>"
    body = "".join(rows) or "<tr><td colspan=4>none</td></tr>"
    return f'<h2>In progress</h2><table id="in-progress">{head}{body}</table>'


def _bars(values: Sequence[int], label: str, unit: str, element_id: str) -> str:
    """One SVG bar chart: a bar a minute, oldest left; each bar's title is its figure."""
    top = max(values) or 1
    width = CHART_WIDTH / len(values)
    bars = []
    for index, value in enumerate(values):
        height = round(value / top * CHART_HEIGHT, 1)
        ago = len(values) - 1 - index
        shown = human_size(value) if unit == "bytes" else f"{value} requests"
        bars.append(
            f'<rect x="{index * width:.1f}" y="{CHART_HEIGHT - height}" '
            f'width="{max(width - BAR_GAP, 1):.1f}" height="{height}" data-value="{value}">'
            f"<title>{ago} min ago: {shown}</title></rect>"
        )
    peak = human_size(top) if unit == "bytes" else f"{top}"
    return (
        f"<figure><figcaption>{html.escape(label)} per minute, last hour "
        f"(peak {peak})</figcaption>"
        f'<svg id="{element_id}" width="{CHART_WIDTH}" height="{CHART_HEIGHT + 14}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT + 14}" role="img" fill="#4a7bb7">'
        + "".join(bars)
        + f'<text x="0" y="{CHART_HEIGHT + 12}" font-size="10" fill="#666">60 min ago</text>'
        f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT + 12}" font-size="10" fill="#666" '
        'text-anchor="end">now</text></svg></figure>'
    )


def chart(activity: Activity) -> str:
    series = activity.series()
    requests = [r for _, r, _ in series]
    sent = [b for _, _, b in series]
    return (
        "<h2>Last hour</h2>"
        + _bars(requests, "Requests", "requests", "chart-requests")
        + _bars(sent, "Bytes sent", "bytes", "chart-bytes")
    )
