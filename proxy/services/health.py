"""Liveness, readiness and the start-up report.

``/readyz`` is ready when the proxy can do its job: the cache index answers, the cache
directory takes a write and has ``cache.min_free`` bytes free, credentials can be
obtained (or the proxy is offline), and the upstream answered ``/v2/`` as a registry
within the last ``PROBE_INTERVAL`` seconds (asked again, at most that often, by the
readiness check itself: no background traffic when nobody asks).
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
from proxy.upstream.probe import Probe, probe

log = logging.getLogger("gar_proxy")
PROBE_INTERVAL = 30.0
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
        self.last_probe: Probe | None = None
        self._probed_at = float("-inf")
        self._probing: asyncio.Lock = asyncio.Lock()

    @property
    def offline(self) -> bool:
        return self.services.settings.cache.offline

    async def upstream(self) -> Check:
        if self.offline:
            return Check(True, "offline mode: upstream not used")
        async with self._probing:
            if self.clock.monotonic() - self._probed_at >= PROBE_INTERVAL:
                upstream = self.services.upstream
                base = upstream.base_url(upstream.settings.location)
                self.last_probe = await probe(upstream.http, base)
                self._probed_at = self.clock.monotonic()
        assert self.last_probe is not None
        return Check(self.last_probe.registry, self.last_probe.describe())

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

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "index": await self.index(),
            "cache": await self.cache(),
            "credentials": await self.credentials(),
            "upstream": await self.upstream(),
        }
        ready = all(c.ok for c in checks.values())
        self.services.metrics.ready.set(1 if ready else 0)
        return ready, {"ready": ready, "checks": {k: c.as_json() for k, c in checks.items()}}

    async def report_start(self) -> None:
        """One line at start: the credential source and what the upstream is."""
        credentials, upstream = await self.credentials(), await self.upstream()
        await self.readiness()  # sets garproxy_ready before anyone asks /readyz
        level = logging.INFO if credentials.ok and upstream.ok else logging.WARNING
        state = "" if credentials.ok else " (not usable)"
        log.log(
            level,
            "credentials: %s%s; %s",
            credentials.detail,
            state,
            upstream.detail,
            extra={
                "credential_source": credentials.extra.get("source"),
                "upstream_registry": upstream.ok,
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
