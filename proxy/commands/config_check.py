"""``gar-proxy config check``: every effective setting with where it came from, then
the things that stop a proxy from working: the cache dir, the credentials and the
upstream. Exit 0 when all three are fine, 1 otherwise (usable in a CI step)."""

from __future__ import annotations

import asyncio

from proxy.commands.preflight import StartupError, check_ca_file, check_cache_dir
from proxy.commands.progress import Say
from proxy.config import Settings, describe
from proxy.redact import redact


def _table(settings: Settings, sources: dict[str, str]) -> list[str]:
    rows = describe(settings)
    key_width = max(len(key) for key, _ in rows)
    value_width = min(48, max(len(value) for _, value in rows))
    return [
        redact(f"{key:<{key_width}}  {value:<{value_width}}  [{sources[key]}]")
        for key, value in rows
    ]


async def _checks(settings: Settings) -> list[tuple[str, bool, str]]:
    from proxy.services.container import open_services
    from proxy.services.health import Health

    try:
        check_cache_dir(settings.cache.dir)
    except StartupError as error:
        return [("cache dir", False, str(error))]
    results = [("cache dir", True, f"{settings.cache.dir} writable")]
    try:
        check_ca_file(settings.upstream.ca_file)
    except StartupError as error:  # the services would not open
        return [*results, ("upstream CA", False, str(error))]
    async with open_services(settings) as services:
        health = Health(services)
        credentials = await health.credentials()
        # An authenticated request, as a pull makes: a wrong password is "rejected" here,
        # not "ok" because a password was configured.
        upstream = await health.check_upstream()
        rejected = upstream.state == "rejected"
        detail = credentials.detail + (" (rejected by the upstream)" if rejected else "")
        results.append(("credentials", credentials.ok and not rejected, detail))
        ok = upstream.up or upstream.state == "offline"
        results.append(("upstream", ok, upstream.line()))
    return results


def run(settings: Settings, sources: dict[str, str], say: Say) -> int:
    for line in _table(settings, sources):
        say(line)
    say("")
    results = asyncio.run(_checks(settings))
    for name, ok, detail in results:
        say(redact(f"{'ok  ' if ok else 'FAIL'}  {name}: {detail}"))
    return 0 if all(ok for _, ok, _ in results) else 1
