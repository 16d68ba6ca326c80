"""Liveness, readiness, the upstream check and the start-up report.

**Ready means "can serve"**: the cache index answers and the cache directory takes a
write with ``cache.min_free`` bytes free. The upstream is not part of it: a proxy whose
upstream is down still serves what it has cached (stale tags included), which is when
a readiness-gated Service most needs it. The upstream's state is its own signal,
``garproxy_upstream_up`` and the ``upstream`` field of ``/readyz``, kept by a
background check every ``upstream.check_interval`` (the injected clock's ``sleep``):
one authenticated ``GET /v2/`` (``proxy.upstream.probe``), so a wrong password reads
as ``rejected`` before the first pull fails. The same loop sets ``garproxy_ready``, so
the gauges move whether or not anyone calls ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from proxy.clock import SYSTEM, Clock
from proxy.config import UpstreamSettings
from proxy.oci.errors import RegistryError
from proxy.services.container import Services
from proxy.upstream import probe
from proxy.upstream.probe import UpstreamState

log = logging.getLogger("gar_proxy")
CREDENTIALS_TIMEOUT = 10.0


@dataclass
class Check:
    ok: bool
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.extra}


class Health:
    def __init__(self, services: Services, clock: Clock = SYSTEM) -> None:
        self.services = services
        self.clock = clock
        self.started = clock.time()
        self.upstream_state: UpstreamState | None = None
        self.checked_at: float | None = None  # clock.time() of the last upstream check
        self._checking = asyncio.Lock()

    @property
    def offline(self) -> bool:
        return self.services.settings.cache.offline

    async def check_upstream(self) -> UpstreamState:
        """Ask the upstream now (one authenticated ``GET /v2/``) and remember the answer."""
        if self.offline:
            found = UpstreamState("offline", "", None, "")
        else:
            async with self._checking:
                upstream = self.services.upstream
                base = upstream.base_url(upstream.default_location)
                found = await probe.check(upstream.http, upstream.auth, base)
        self._record(found)
        return found

    def _record(self, found: UpstreamState) -> None:
        before, self.upstream_state = self.upstream_state, found
        self.checked_at = self.clock.time()
        metrics = self.services.metrics
        metrics.upstream_up.set(1 if found.up or found.state == "offline" else 0)
        if found.state == "rejected" and found.status in (401, 403):
            metrics.credential_failures.labels(f"upstream_{found.status}").inc()
        if before is not None and before.state != found.state:
            level = logging.INFO if found.up else logging.WARNING
            log.log(level, "upstream state %s -> %s: %s", before.state, found.state,
                    found.line(), extra={"upstream_check": found.state})  # fmt: skip

    async def upstream(self) -> Check:
        """The last upstream check as a ``Check`` (asks now if none was made yet)."""
        found = self.upstream_state or await self.check_upstream()
        return Check(found.up or found.state == "offline", found.line(), found.as_json())

    async def credentials(self) -> Check:
        """Which credentials the proxy uses, and whether a token can be had now."""
        settings = self.services.settings
        auth = settings.upstream.auth
        if self.offline:
            return Check(True, "offline mode: no credentials needed", {"source": "offline"})
        if auth == "none":
            return Check(True, "anonymous (upstream.auth = none)", {"source": "none"})
        if auth in ("basic", "bearer"):
            return _own_credentials(settings.upstream)
        tokens = self.services.upstream.auth.tokens
        assert tokens is not None
        try:
            await asyncio.wait_for(tokens.token(), CREDENTIALS_TIMEOUT)
        except (RegistryError, TimeoutError) as error:
            message = getattr(error, "message", "") or "timed out asking for a token"
            return Check(False, message, {"source": "gcp"})
        source = getattr(tokens, "source", "gcp")
        expires = getattr(tokens, "expires_in", lambda: None)()
        extra = {
            "source": source,
            "token_refresh_in_s": None if expires is None else round(expires),
        }
        return Check(True, f"Google credentials from {source}", extra)

    async def cache(self) -> Check:
        settings = self.services.settings.cache
        try:
            await asyncio.to_thread(_try_write, settings.dir)
            free = shutil.disk_usage(settings.dir).free
        except OSError as error:
            return Check(False, f"cache dir {settings.dir} is not writable: {error.strerror}")
        extra = {"free_bytes": free, "min_free_bytes": settings.min_free}
        if free < settings.min_free:
            detail = f"only {free} bytes free in {settings.dir}, below cache.min_free"
            return Check(False, detail, extra)
        return Check(True, f"{settings.dir} writable", extra)

    async def index(self) -> Check:
        try:
            async with self.services.index.db.execute("SELECT 1") as cursor:
                await cursor.fetchone()
        except Exception as error:  # closed, locked, corrupt: any of them is "not ready"
            return Check(False, f"cache index unusable: {error}")
        return Check(True, "open")

    async def ready(self) -> tuple[bool, dict[str, Check]]:
        """Can the proxy serve? The index and the cache disk; sets ``garproxy_ready``."""
        checks = {"index": await self.index(), "cache": await self.cache()}
        ready = all(c.ok for c in checks.values())
        self.services.metrics.ready.set(1 if ready else 0)
        return ready, checks

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: ready or not, each check, and the upstream's last known state."""
        ready, checks = await self.ready()
        checks["credentials"] = await self.credentials()
        upstream = self.upstream_state or await self.check_upstream()
        checks["upstream"] = Check(upstream.up or upstream.state == "offline", upstream.line())
        return ready, {
            "ready": ready,
            "checks": {name: check.as_json() for name, check in checks.items()},
            "upstream": {**upstream.as_json(), "checked_at": self.checked_at},
            "uptime_s": round(self.clock.time() - self.started, 1),
        }

    async def watch(self) -> None:
        """The background check: the start-up line, then every ``upstream.check_interval``
        the upstream and readiness again (gauges and log lines on a change)."""
        await self.report_start()
        interval = self.services.settings.upstream.check_interval
        if interval <= 0:
            return
        while True:
            await self.clock.sleep(interval)
            try:
                await self.check_upstream()
                await self.ready()
            except Exception:  # a check must never end the loop; the next one runs
                log.exception("background health check failed")

    async def report_start(self) -> None:
        """One line at start: the credential source and what the upstream answered."""
        credentials = await self.credentials()
        upstream = await self.check_upstream()
        await self.ready()  # sets garproxy_ready before anyone asks /readyz
        ok = credentials.ok and (upstream.up or upstream.state == "offline")
        state = "" if credentials.ok else " (not usable)"
        log.log(
            logging.INFO if ok else logging.WARNING,
            "credentials: %s%s; %s",
            credentials.detail,
            state,
            upstream.line(),
            extra={
                "credential_source": credentials.extra.get("source"),
                "upstream_check": upstream.state,
                "upstream_registry": upstream.state in ("up", "rejected"),
            },
        )


def _try_write(directory: os.PathLike[str]) -> None:
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-"):
        pass


def _own_credentials(upstream: UpstreamSettings) -> Check:
    """Basic or bearer credentials (a lower tier's): present and, from a file, readable."""
    secret = upstream.token_file if upstream.auth == "bearer" else upstream.password_file
    if secret is not None and not os.access(secret, os.R_OK):
        return Check(False, f"cannot read {secret}", {"source": upstream.auth})
    if upstream.auth == "bearer":
        return Check(True, f"bearer token from {secret}", {"source": "bearer"})
    ok = bool(upstream.username and (upstream.password or secret))
    detail = f"basic auth as {upstream.username}" if ok else "basic auth without a password"
    return Check(ok, detail, {"source": "basic"})
