"""Google OAuth access tokens for Artifact Registry, from the first credential source that works.

Sources, in this order; the first one configured wins, and the next is tried only when a
source is absent (a missing file, a metadata server that does not answer)::

    1. GOOGLE_APPLICATION_CREDENTIALS   a key file (service account or any google-auth JSON)
    2. GAR_SERVICE_ACCOUNT_KEY          the same JSON, inline
    3. application default credentials  ``gcloud auth application-default login``
    4. the metadata server              GCE, GKE workload identity; must answer in 2 s

Use::

    tokens = GoogleTokenSource(settings)
    sent = await tokens.token()            # cached until shortly before it expires
    ...                                    # GAR answered 401 to `sent`:
    retry_with = await tokens.refresh(sent)

Failures are ``RegistryError(DENIED)`` (403): the client did nothing wrong and cannot fix
it by logging in (a 401 would only make docker prompt for a password). It is a 4xx on
purpose: docker and containerd print the message of a 4xx answer ("denied: Google
rejected the service-account key ... create a new key ...") but only the status line of
a 5xx, and the message is the whole point.
Google being unreachable or slow is ``UPSTREAM_UNAVAILABLE`` (503), which clients retry.
Token values never reach a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import requests

from proxy.clock import SYSTEM, Clock
from proxy.config import GcpSettings
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.upstream.gcp_advice import advice, reason, transient
from proxy.upstream.gcp_sources import Scopes, Source, discover, load_credentials, unauthorized

_LOG = logging.getLogger("gar_proxy.auth")

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
CLOUD_PLATFORM_READ_ONLY = "https://www.googleapis.com/auth/cloud-platform.read-only"

# Renew this long before expiry so a token never dies in the middle of a blob transfer.
_MAX_MARGIN_SECONDS = 300.0
_MARGIN_FRACTION = 0.1
# With no source found, requests fail fast for this long instead of each waiting for the
# metadata server again; after it, a newly mounted key or a recovered server is noticed.
_RETRY_DISCOVERY_SECONDS = 30.0
# After Google or the metadata server failed to issue a token (google-auth already
# retried, ~15 s for the metadata server), callers fail at once for this long rather
# than each waiting through the same retries again.
_TRANSIENT_COOLDOWN = 5.0


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float  # the clock's monotonic reading

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at


class GoogleTokenSource:
    """Google OAuth access tokens from the first credential source that works."""

    def __init__(
        self,
        settings: GcpSettings,
        *,
        timeout: float = 30.0,
        token_uri: str | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        """``token_uri`` replaces Google's OAuth endpoint for key and ADC credentials (tests,
        Private Service Connect); google-auth pins gcloud logins to oauth2.googleapis.com.
        ``clock`` times the tokens' renewal and the pause after a failed discovery."""
        self._settings = settings
        self._clock = clock
        self._timeout = timeout
        self._token_uri = token_uri
        self._session = requests.Session()
        # google-auth's token calls pass no timeout of their own (the default is 120 s).
        self._request = functools.partial(
            google.auth.transport.requests.Request(self._session),
            timeout=timeout,
        )
        self._resolved: Source | None = None
        self._discovery: asyncio.Task[Source] | None = None
        self._failure: tuple[float, RegistryError] | None = None  # (retry after, error)
        self._trouble: dict[Scopes, tuple[float, RegistryError]] = {}  # see _TRANSIENT_COOLDOWN
        # The refresh under way per scope: owned by the source, not by the caller that
        # started it, so a caller giving up (a health check's timeout) leaves it running
        # for the next one to join instead of starting google-auth's retries again.
        self._refreshing: dict[Scopes, asyncio.Task[str]] = {}
        self._credentials: dict[Scopes, Any] = {}
        self._tokens: dict[Scopes, _Token] = {}
        self._locks: dict[Scopes, asyncio.Lock] = {}
        # (kind, obtained) after each refresh; the app counts them in its metrics.
        self.observe: Callable[[str, bool], None] = lambda kind, ok: None

    def __repr__(self) -> str:
        return f"GoogleTokenSource({self.source})"

    @property
    def source(self) -> str:
        """The credential source in use, e.g. ``key file /etc/gar/key.json``."""
        return self._resolved.name if self._resolved else "not resolved yet"

    def _scopes(self, wide: bool) -> Scopes:
        # A read-only proxy asks for the narrow scope; a write that got 403 asks for `wide`.
        if self._settings.read_only and not wide:
            return (CLOUD_PLATFORM_READ_ONLY,)
        return (CLOUD_PLATFORM,)

    def expires_in(self) -> float | None:
        """Seconds until the soonest cached token is refreshed; None before the first."""
        if not self._tokens:
            return None
        soonest = min(t.refresh_at for t in self._tokens.values())
        return max(0.0, soonest - self._clock.monotonic())

    async def token(self, *, wide: bool = False) -> str:
        """A valid access token; N concurrent callers with a stale cache cause one refresh."""
        scopes = self._scopes(wide)
        seen = self._tokens.get(scopes)
        if seen is not None and seen.fresh(self._clock.monotonic()):
            return seen.value
        await self._resolve()  # outside the lock, so that waiters share one discovery
        async with self._locks.setdefault(scopes, asyncio.Lock()):
            current = self._tokens.get(scopes)
            # A token that appeared while we waited is the one to use, even if Google gave it a
            # lifetime shorter than our margin: refreshing again would not give a better one.
            fresh = current is not None and current.fresh(self._clock.monotonic())
            if current is not None and (current is not seen or fresh):
                return current.value
            return await self._obtain(scopes)

    async def refresh(self, stale: str, *, wide: bool = False) -> str:
        """A new token after upstream rejected ``stale``; one refresh per stale token."""
        scopes = self._scopes(wide)
        await self._resolve()
        async with self._locks.setdefault(scopes, asyncio.Lock()):
            current = self._tokens.get(scopes)
            if current is not None and current.value != stale:
                return current.value
            return await self._obtain(scopes)

    async def aclose(self) -> None:
        if self._discovery is not None and not self._discovery.done():
            self._discovery.cancel()
        for running in self._refreshing.values():
            running.cancel()
        self._tokens.clear()
        self._session.close()

    # --- obtaining a token ----------------------------------------------------------------

    async def _obtain(self, scopes: Scopes) -> str:
        """Refresh the credentials for ``scopes``, or join the refresh under way; the
        caller holds their lock."""
        running = self._refreshing.get(scopes)
        if running is None or running.done():
            source = await self._resolve()
            trouble = self._trouble.get(scopes)
            if trouble is not None and self._clock.monotonic() < trouble[0]:
                failed = trouble[1]
                raise RegistryError(failed.code, failed.message, headers=failed.headers)
            running = asyncio.ensure_future(self._refresh(source, scopes))
            running.add_done_callback(_retrieved)
            self._refreshing[scopes] = running
        return await asyncio.shield(running)

    async def _refresh(self, source: Source, scopes: Scopes) -> str:
        credentials = self._credentials.get(scopes)
        if credentials is None:
            credentials = self._credentials[scopes] = load_credentials(
                source, scopes, self._token_uri
            )
        started = self._clock.monotonic()
        timeout = self._timeout
        try:
            # google-auth is synchronous; a thread keeps the event loop serving other requests.
            await asyncio.wait_for(asyncio.to_thread(credentials.refresh, self._request), timeout)
        except TimeoutError:
            self.observe("google", False)
            raise RegistryError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"Google did not issue an access token within {timeout:g} s ({source.name})",
            ) from None
        except google.auth.exceptions.GoogleAuthError as error:
            self.observe("google", False)
            failed = self._translate(source, credentials, error)
            if failed.code is ErrorCode.UPSTREAM_UNAVAILABLE:
                self._trouble[scopes] = (self._clock.monotonic() + _TRANSIENT_COOLDOWN, failed)
            raise failed from None
        self._trouble.pop(scopes, None)
        self.observe("google", True)
        value = credentials.token
        if not isinstance(value, str) or not value:
            raise unauthorized(f"Google answered without an access token ({source.name})")
        lifetime = _lifetime(credentials.expiry)
        usable = max(0.0, lifetime - min(_MAX_MARGIN_SECONDS, _MARGIN_FRACTION * lifetime))
        self._tokens[scopes] = _Token(value, started + usable)
        _LOG.info(
            "obtained a Google access token from %s (scope %s, valid %.0f s)",
            source.name,
            " ".join(scopes),
            lifetime,
        )
        return value

    def _translate(self, source: Source, credentials: Any, error: Exception) -> RegistryError:
        """One place that turns google-auth's failures into the registry's error: Google
        in trouble is a 503 to retry (a metadata server's 5xx burst too, which
        google-auth reports as a final ``RefreshError``: docs/GAR.md R10), anything
        else a refusal with advice for this kind of credentials (``gcp_advice``)."""
        why = reason(error)  # OAuth error bodies carry no tokens
        _LOG.debug("token refresh from %s failed: %s: %s", source.name, type(error).__name__, why)
        if transient(error):
            return RegistryError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"could not get an access token from {source.name} ({why}); Google or the "
                f"metadata server is in trouble: retry in {_TRANSIENT_COOLDOWN:g} s",
                headers={"Retry-After": f"{_TRANSIENT_COOLDOWN:g}"},
            )
        return unauthorized(advice(source.name, source.install_hint, credentials, why))

    # --- finding a credential source ------------------------------------------------------

    async def _resolve(self) -> Source:
        """The credential source, discovered once; concurrent callers share one discovery."""
        if self._resolved is not None:
            return self._resolved
        if self._failure is not None and self._clock.monotonic() < self._failure[0]:
            failed = self._failure[1]
            # A fresh copy: re-raising one object would grow its traceback with every request.
            raise RegistryError(failed.code, failed.message)
        if self._discovery is None:
            self._discovery = asyncio.ensure_future(discover(self._settings))
        task = self._discovery
        try:
            # shield: one caller giving up must not cancel the discovery the others wait on.
            self._resolved = await asyncio.shield(task)
        except BaseException as error:
            if task.done() and self._discovery is task:
                self._discovery = None
                if isinstance(error, RegistryError):
                    retry_at = self._clock.monotonic() + _RETRY_DISCOVERY_SECONDS
                    self._failure = (retry_at, error)
            raise
        return self._resolved


# --- helpers ----------------------------------------------------------------------------------


def _retrieved(task: asyncio.Task[str]) -> None:
    """A refresh whose every caller gave up still ends quietly (its failure is recorded
    in ``_trouble`` for the next caller)."""
    if not task.cancelled():
        task.exception()


def _lifetime(expiry: datetime.datetime | None) -> float:
    """Seconds until google-auth's ``expiry`` (naive UTC); an hour if Google gave none.

    google-auth stamps ``expiry`` as its own ``utcnow()`` plus Google's ``expires_in``,
    so it is read against the same wall clock: this turns Google's answer back into a
    duration (measurement); the token's age is then counted on the injected clock.
    """
    if expiry is None:
        return 3600.0
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return max(0.0, (expiry - datetime.datetime.now(datetime.UTC)).total_seconds())
