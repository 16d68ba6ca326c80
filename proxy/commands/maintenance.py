"""``gar-proxy refresh NAME[:TAG]`` and ``gar-proxy purge NAME[:TAG|@DIGEST] [--blobs]``.

Where the work is done: a proxy serving from the cache holds tags in memory and knows
its running fills and readers, which the cache directory does not show. So when
another process has the cache open (its lock says so), the command asks that proxy
at its admin path (``/_gar-proxy/refresh|purge/...``): at ``--proxy URL``, else at
``server.listen`` of the same settings; ``--token-file`` sends a bearer token (client
auth on: an identity with ``admin``). Otherwise it opens the cache directory itself,
as ``gc`` does. Both print the same thing (``--json``: the admin path's answer).
Exit status: 0, or 1 when a tag could not be refreshed or the proxy refused.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from proxy.cache.lock import open_elsewhere
from proxy.config import Settings
from proxy.human import human_size
from proxy.services import maintenance
from proxy.services.container import Services
from proxy.upstream import proxy_admin

COMMANDS = ("refresh", "purge")
OnServices = Callable[[str, Callable[[Services], Awaitable[int]]], int]
Say = Callable[[str], None]


def add_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    refresh = command("refresh", "revalidate tags now, whatever their TTL: old -> new digest")
    refresh.add_argument("image", help="NAME[:TAG]; without a tag, every cached tag of NAME")
    purge = command("purge", "forget cached tags; --blobs: and what only they used")
    purge.add_argument("image", help="NAME[:TAG|@DIGEST]; without either, every cached tag")
    purge.add_argument("--blobs", action="store_true", help="remove unreferenced blobs too")
    for sub in (refresh, purge):
        sub.add_argument("--json", action="store_true", help="JSON for machines")
        sub.add_argument("--proxy", metavar="URL", help="the running proxy to ask")
        sub.add_argument("--token-file", type=Path, help="bearer token for --proxy (admin)")


def proxy_url(settings: Settings) -> str:
    """Where the proxy of these settings listens (a wildcard address: loopback)."""
    host, port = settings.server.listen
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.tls.cert_file else "http"
    return f"{scheme}://{host}:{port}"


def refresh_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for row in data["tags"]:
        name = f"{data['repository']}:{row['tag']}"
        if "error" in row:
            lines.append(f"{name}  error: {row['error']}")
            continue
        state = "changed" if row["changed"] else "unchanged"
        lines.append(f"{name}  {row['before'] or '(not cached)'} -> {row['after']}  {state}")
        if "warning" in row:
            lines.append(
                f"WARNING: {name} is immutable (tag policy or the repository's immutable"
                " tags) but upstream moved it; the cache follows upstream now"
            )
    return lines


def purge_lines(data: dict[str, Any]) -> list[str]:
    tags = ", ".join(data["tags"]) or "none cached"
    lines = [f"forgot {len(data['tags'])} tag(s) of {data['repository']}: {tags}"]
    if data["blobs"] or data["manifests"]:
        lines.append(
            f"removed {data['manifests']} manifest(s) and {data['blobs']} blob(s),"
            f" freed {human_size(data['freed'])}"
        )
    return lines


def _failed(data: dict[str, Any]) -> int:
    return 1 if any("error" in row for row in data.get("tags", []) if isinstance(row, dict)) else 0


def _show(args: argparse.Namespace, data: dict[str, Any], say: Say) -> int:
    lines = refresh_lines if args.command == "refresh" else purge_lines
    say(json.dumps(data, indent=2) if args.json else "\n".join(lines(data)))
    return _failed(data) if args.command == "refresh" else 0


def _remote(args: argparse.Namespace, url: str, say: Say, warn: Say) -> int:
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            warn(f"gar-proxy {args.command}: --token-file {args.token_file}: {error}")
            return 1
    query = "blobs=true" if getattr(args, "blobs", False) else ""
    try:
        answer = proxy_admin.post(url, f"{args.command}/{args.image.strip()}", token=token,
                                  query=query)  # fmt: skip
    except proxy_admin.AdminUnreachable as error:
        warn(f"gar-proxy {args.command}: cannot reach the proxy at {url} ({error}); give --proxy")
        return 1
    if answer.status != 200:
        warn(f"gar-proxy {args.command}: {url}: {answer.message}")
        return 1
    return _show(args, answer.data, say)


def run(
    args: argparse.Namespace, settings: Settings, on_services: OnServices, say: Say, warn: Say
) -> int:
    if args.proxy or open_elsewhere(settings.cache.dir):
        url = (args.proxy or proxy_url(settings)).rstrip("/")
        if not args.proxy and not args.json:
            say(f"the cache is open in another process: asking the proxy at {url}")
        return _remote(args, url, say, warn)

    async def work(services: Services) -> int:
        if args.command == "refresh":
            data = await maintenance.refresh(services, args.image)
        else:
            data = await maintenance.purge(services, args.image, blobs=args.blobs)
        return _show(args, data, say)

    return on_services(args.command, work)
