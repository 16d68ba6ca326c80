"""Scheduled warming (``[[warm]]``): while ``serve`` runs, the tags of each listed image
that match its pattern, and every image its ``files`` name (read again each round:
a checkout a sidecar keeps current is followed; with its ``build_args`` and
``env_files``, never the server's own environment), are pulled into the cache at start
and then every interval, through the same ``warm`` a ``gar-proxy warm`` runs, so no
client waits on a cold pull of what is listed. A failure is logged and counted
(``garproxy_scheduled_warms_total{outcome="failed"}``) and tried again at the next
interval; it never stops the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import re
from collections.abc import AsyncIterator
from pathlib import Path

from proxy.clock import SYSTEM, Clock
from proxy.config.values import WarmSchedule
from proxy.oci.links import next_target
from proxy.oci.names import ImageReference
from proxy.oci.platform import Platform, normalize_arch
from proxy.services import warm_files
from proxy.services.container import Services
from proxy.services.warming import Lines, resolve, warm

log = logging.getLogger("gar_proxy.warm")


def host_platform() -> Platform:
    return Platform("linux", normalize_arch(platform.machine()))


# A listing too large for one answer comes in pages (Link); this many at most.
MAX_PAGES = 100


async def matching_tags(services: Services, entry: WarmSchedule) -> list[str]:
    """Upstream's tags of the image that the entry's pattern finds, sorted. Reads the
    ``tags`` member of GAR's GCR-shaped list (docs/GAR.md N3), every page of it."""
    image = ImageReference.parse(entry.image)
    repo = await resolve(services, image)
    pattern = re.compile(entry.tags)
    found: list[str] = []
    n = last = None
    for _ in range(MAX_PAGES):
        listing = await services.listings.tags(repo, n, last, client_name=entry.image)
        tags = [str(tag) for tag in json.loads(listing.body).get("tags") or []]
        found += [tag for tag in tags if pattern.search(tag)]
        page = _next_page(listing.headers.get("Link"))
        if page is None or not tags:
            break
        n, last = page
    return sorted(found)


def _next_page(link: str | None) -> tuple[str | None, str | None] | None:
    """(n, last) of a ``Link: </v2/...?n=N&last=T>; rel="next"``; None without one."""
    target = next_target(link)
    last = target.get("last") if target else None
    return (target.get("n"), last) if target and last else None


async def warm_once(services: Services, entry: WarmSchedule) -> int:
    """One round for one entry; returns how many images failed (each is tried anyway)."""
    failed = await _warm_tags(services, entry) if entry.image else 0
    if entry.files:
        failed += await _warm_files(services, entry)
    return failed


def _count(services: Services, outcome: str) -> None:
    services.metrics.scheduled_warms.labels(outcome).inc()


async def _warm_files(services: Services, entry: WarmSchedule) -> int:
    platforms = [Platform.parse(p) for p in entry.platforms]
    try:
        found = await warm_files.read_and_resolve(
            services, [Path(f) for f in entry.files], platforms,
            build_args=dict(entry.build_args), env_files=[Path(f) for f in entry.env_files],
        )  # fmt: skip
    except Exception as error:  # unreadable, or the API down: try next interval
        log.warning("scheduled warm of %s: reading failed: %s", entry.name, error)
        _count(services, "failed")
        return 1
    for problem in found.problems:
        log.warning(
            "scheduled warm: cannot warm %s (%s): %s", problem.text, problem.where, problem.reason
        )
    failed = 0
    for target in found.targets:
        try:
            await warm_files.warm_target(
                services, target, platforms, pin=False, report=Lines(log.debug)
            )
            _count(services, "ok")
        except Exception as error:
            failed += 1
            log.warning("scheduled warm of %s failed: %s", target, error)
            _count(services, "failed")
    return failed


async def _warm_tags(services: Services, entry: WarmSchedule) -> int:
    platforms = [Platform.parse(p) for p in entry.platforms] or [host_platform()]
    failed = 0
    try:
        tags = await matching_tags(services, entry)
    except Exception as error:  # upstream down, repository gone: try next interval
        log.warning("scheduled warm of %s: listing tags failed: %s", entry.image, error)
        services.metrics.scheduled_warms.labels("failed").inc()
        return 1
    for tag in tags:
        try:
            await warm(
                services, f"{entry.image}:{tag}", platforms, pin=False,
                report=Lines(log.debug), strict=bool(entry.platforms),
            )  # fmt: skip
            services.metrics.scheduled_warms.labels("ok").inc()
        except Exception as error:
            failed += 1
            log.warning("scheduled warm of %s:%s failed: %s", entry.image, tag, error)
            services.metrics.scheduled_warms.labels("failed").inc()
    return failed


async def _keep_warm(services: Services, entry: WarmSchedule, clock: Clock) -> None:
    while True:
        await warm_once(services, entry)
        await clock.sleep(entry.interval)


@contextlib.asynccontextmanager
async def scheduled_warming(services: Services, clock: Clock = SYSTEM) -> AsyncIterator[None]:
    """Background tasks for ``cache.warm``, cancelled when the app stops."""
    tasks = [
        asyncio.create_task(_keep_warm(services, entry, clock), name=f"warm {entry.name}")
        for entry in services.settings.cache.warm
        if not services.settings.cache.offline
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
