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
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google.auth
import google.auth.compute_engine
import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import httpx
import requests

from proxy.config import Settings
from proxy.oci.errors import ErrorCode, RegistryError

_LOG = logging.getLogger("gar_proxy.auth")

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
CLOUD_PLATFORM_READ_ONLY = "https://www.googleapis.com/auth/cloud-platform.read-only"

# Renew this long before expiry so a token never dies in the middle of a blob transfer.
_MAX_MARGIN_SECONDS = 300.0
_MARGIN_FRACTION = 0.1
# With no source found, requests fail fast for this long instead of each waiting for the
# metadata server again; after it, a newly mounted key or a recovered server is noticed.
_RETRY_DISCOVERY_SECONDS = 30.0

_NO_CREDENTIALS = (
    "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS, GAR_SERVICE_ACCOUNT_KEY, "
    "run `gcloud auth application-default login`, or run on GCE/GKE"
)
# What Google's token endpoint says about keys and logins that no longer work.
_REJECTION_MARKERS = (
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "jwt signature",
    "not found",
    "disabled",
    "deleted",
    "expired",
    "revoked",
)

Scopes = tuple[str, ...]


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float  # time.monotonic()

    def fresh(self) -> bool:
        return time.monotonic() < self.refresh_at


@dataclass(frozen=True)
class _Source:
    name: str
    load: Callable[[Scopes], Any]  # scopes -> google.auth credentials
    install_hint: str | None = None  # where a replacement key goes; None for the metadata server


def _unauthorized(message: str) -> RegistryError:
    return RegistryError(ErrorCode.DENIED, message)


class GoogleTokenSource:
    """Google OAuth access tokens from the first credential source that works."""

    def __init__(self, settings: Settings, *, token_uri: str | None = None) -> None:
        """``token_uri`` replaces Google's OAuth endpoint for key and ADC credentials (tests,
        Private Service Connect); google-auth pins gcloud logins to oauth2.googleapis.com."""
        self._settings = settings
        self._token_uri = token_uri
        self._session = requests.Session()
        # google-auth's token calls pass no timeout of their own (the default is 120 s).
        self._request = functools.partial(
            google.auth.transport.requests.Request(self._session),
            timeout=settings.timeout_seconds,
        )
        self._resolved: _Source | None = None
        self._discovery: asyncio.Task[_Source] | None = None
        self._failure: tuple[float, RegistryError] | None = None  # (retry after, error)
        self._credentials: dict[Scopes, Any] = {}
        self._tokens: dict[Scopes, _Token] = {}
        self._locks: dict[Scopes, asyncio.Lock] = {}

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

    async def token(self, *, wide: bool = False) -> str:
        """A valid access token; N concurrent callers with a stale cache cause one refresh."""
        scopes = self._scopes(wide)
        seen = self._tokens.get(scopes)
        if seen is not None and seen.fresh():
            return seen.value
        await self._resolve()  # outside the lock, so that waiters share one discovery
        async with self._locks.setdefault(scopes, asyncio.Lock()):
            current = self._tokens.get(scopes)
            # A token that appeared while we waited is the one to use, even if Google gave it a
            # lifetime shorter than our margin: refreshing again would not give a better one.
            if current is not None and (current is not seen or current.fresh()):
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
        self._tokens.clear()
        self._session.close()

    # --- obtaining a token ----------------------------------------------------------------

    async def _obtain(self, scopes: Scopes) -> str:
        """Refresh the credentials for ``scopes``; the caller holds their lock."""
        source = await self._resolve()
        credentials = self._credentials.get(scopes)
        if credentials is None:
            credentials = self._credentials[scopes] = _load(source, scopes, self._token_uri)
        started = time.monotonic()
        timeout = self._settings.timeout_seconds
        try:
            # google-auth is synchronous; a thread keeps the event loop serving other requests.
            await asyncio.wait_for(asyncio.to_thread(credentials.refresh, self._request), timeout)
        except TimeoutError:
            raise RegistryError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"Google did not issue an access token within {timeout:g} s ({source.name})",
            ) from None
        except google.auth.exceptions.GoogleAuthError as error:
            raise self._translate(source, credentials, error) from None
        value = credentials.token
        if not isinstance(value, str) or not value:
            raise _unauthorized(f"Google answered without an access token ({source.name})")
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

    def _translate(self, source: _Source, credentials: Any, error: Exception) -> RegistryError:
        """One place that turns google-auth's failures into the registry's error."""
        reason = _reason(error)  # OAuth error bodies carry no tokens
        _LOG.debug(
            "token refresh from %s failed: %s: %s", source.name, type(error).__name__, reason
        )
        transient = isinstance(error, google.auth.exceptions.TransportError) or getattr(
            error, "retryable", False
        )
        if transient:
            return RegistryError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"could not reach Google for an access token ({source.name}): {reason}",
            )
        if source.install_hint is None:
            return _unauthorized(
                f"the metadata server did not issue an access token ({reason}): check the "
                "service account attached to this VM, or the GKE workload identity binding"
            )
        if not any(marker in reason.lower() for marker in _REJECTION_MARKERS):
            return _unauthorized(f"Google refused an access token for {source.name}: {reason}")
        return _unauthorized(_rotation_message(source, credentials, reason))

    # --- finding a credential source ------------------------------------------------------

    async def _resolve(self) -> _Source:
        """The credential source, discovered once; concurrent callers share one discovery."""
        if self._resolved is not None:
            return self._resolved
        if self._failure is not None and time.monotonic() < self._failure[0]:
            failed = self._failure[1]
            # A fresh copy: re-raising one object would grow its traceback with every request.
            raise RegistryError(failed.code, failed.message, status=failed.status)
        if self._discovery is None:
            self._discovery = asyncio.ensure_future(self._discover())
        task = self._discovery
        try:
            # shield: one caller giving up must not cancel the discovery the others wait on.
            self._resolved = await asyncio.shield(task)
        except BaseException as error:
            if task.done() and self._discovery is task:
                self._discovery = None
                if isinstance(error, RegistryError):
                    self._failure = (time.monotonic() + _RETRY_DISCOVERY_SECONDS, error)
            raise
        return self._resolved

    async def _discover(self) -> _Source:
        settings = self._settings
        path = settings.credentials_file
        if path is not None:
            if path.is_file():
                return _file_source(
                    f"key file {path}", path, "point GOOGLE_APPLICATION_CREDENTIALS at it"
                )
            _LOG.warning(
                "GOOGLE_APPLICATION_CREDENTIALS names %s, which does not exist; "
                "trying the next credential source",
                path,
            )
        if settings.service_account_key:
            return _inline_source(settings.service_account_key)
        adc = settings.adc_file
        if adc is not None and adc.is_file():
            return _file_source(
                f"application default credentials {adc}",
                adc,
                f"copy it to {adc} (or point GOOGLE_APPLICATION_CREDENTIALS at it)",
            )
        # Normal on GCE/GKE, hence not a warning.
        _LOG.info("no application default credentials at %s; trying the metadata server", adc)
        if await self._metadata_answers():
            host = settings.metadata_host
            return _Source("metadata server", functools.partial(_metadata_credentials, host))
        raise _unauthorized(_NO_CREDENTIALS)

    async def _metadata_answers(self) -> bool:
        """Whether a metadata server answers as one, within the metadata timeout."""
        host = self._settings.metadata_host
        timeout = self._settings.metadata_timeout_seconds
        try:
            # The overall deadline also covers a slow DNS lookup of metadata.google.internal;
            # trust_env=False because the link-local metadata server is never behind a proxy.
            async with (
                asyncio.timeout(timeout),
                httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
            ):
                response = await client.get(
                    f"http://{host}/computeMetadata/v1/", headers={"Metadata-Flavor": "Google"}
                )
        except (TimeoutError, httpx.HTTPError, OSError) as error:
            _LOG.warning(
                "metadata server %s did not answer within %g s (%s); no credential source left",
                host,
                timeout,
                type(error).__name__,
            )
            return False
        if response.headers.get("Metadata-Flavor") != "Google":
            _LOG.warning(
                "%s answered, but not as a Google metadata server; no credential source left", host
            )
            return False
        return True


# --- credential loaders -----------------------------------------------------------------------


def _file_source(name: str, path: Path, install_hint: str) -> _Source:
    def load(scopes: Scopes) -> Any:
        return google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            str(path), scopes=list(scopes)
        )[0]

    return _Source(name, load, install_hint)


def _inline_source(text: str) -> _Source:
    # Never echo the text: it is a private key.
    try:
        info = json.loads(text)
    except json.JSONDecodeError as error:
        raise _unauthorized(
            f"GAR_SERVICE_ACCOUNT_KEY is not valid JSON (line {error.lineno}, column "
            f"{error.colno}); it must hold a whole service-account key file"
        ) from None
    if not isinstance(info, dict):
        raise _unauthorized("GAR_SERVICE_ACCOUNT_KEY must hold a JSON object (a key file)")

    def load(scopes: Scopes) -> Any:
        return google.auth.load_credentials_from_dict(  # type: ignore[no-untyped-call]
            info, scopes=list(scopes)
        )[0]

    return _Source(
        "inline key (GAR_SERVICE_ACCOUNT_KEY)", load, "put its JSON in GAR_SERVICE_ACCOUNT_KEY"
    )


def _metadata_credentials(host: str, scopes: Scopes) -> Any:
    from google.auth.compute_engine import _metadata

    # google-auth reads GCE_METADATA_HOST once, when it is imported; the setting (which may
    # come from the TOML file) must win, or the ping and the token would use different hosts.
    if getattr(_metadata, "_GCE_METADATA_HOST", host) != host:
        _metadata._GCE_METADATA_HOST = host
    return google.auth.compute_engine.Credentials(  # type: ignore[no-untyped-call]
        scopes=list(scopes)
    )


def _load(source: _Source, scopes: Scopes, token_uri: str | None) -> Any:
    try:
        credentials = source.load(scopes)
    except (google.auth.exceptions.GoogleAuthError, ValueError, OSError) as error:
        raise _unauthorized(
            f"could not load Google credentials from {source.name}: {_reason(error)}"
        ) from None
    if token_uri is not None and hasattr(credentials, "with_token_uri"):
        credentials = credentials.with_token_uri(token_uri)
    return credentials


# --- helpers ----------------------------------------------------------------------------------


def _lifetime(expiry: datetime.datetime | None) -> float:
    """Seconds until google-auth's ``expiry`` (naive UTC); an hour if Google gave none."""
    if expiry is None:
        return 3600.0
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return max(0.0, (expiry - datetime.datetime.now(datetime.UTC)).total_seconds())


def _reason(error: BaseException) -> str:
    """A short, one-line reason: the OAuth error fields if there are any, else the message."""
    data = error.args[1] if len(error.args) > 1 else None
    if isinstance(data, dict) and "error" in data:
        text = f"{data['error']}: {data.get('error_description') or ''}".rstrip(": ")
    else:
        text = str(error.args[0]) if error.args else type(error).__name__
        if error.__cause__ is not None:
            text = f"{text}: {error.__cause__}"
    return " ".join(text.split())[:300]


def _rotation_message(source: _Source, credentials: Any, reason: str) -> str:
    if isinstance(credentials, google.oauth2.credentials.Credentials):
        return (
            f"Google rejected the application default credentials ({reason}): the login "
            "expired or was revoked. Run `gcloud auth application-default login` again "
            "and restart gar-proxy."
        )
    email = getattr(credentials, "service_account_email", None) or "SA_EMAIL"
    return (
        f"Google rejected the service-account key from {source.name} ({reason}): it is "
        "expired, revoked or disabled. Create a new key (gcloud iam service-accounts keys "
        f"create KEY.json --iam-account={email}), {source.install_hint}, "
        "and restart gar-proxy."
    )
