"""How the proxy proves itself to upstream: credentials, challenges, registry tokens.

GAR takes a Google access token straight as ``Authorization: Bearer``. It (and any
OCI registry with token auth) may instead answer 401 with a ``Bearer realm=...``
challenge; the proxy then trades its credentials at the realm for a registry token
(``oauth2accesstoken:<access token>`` as Basic for GAR) and caches it per scope.
A host that ever asked for the trade is remembered and gets registry tokens from
then on, saving the 401 round trip.

Credentials (a Google token, a Basic password) go only to a realm on the upstream's
own host, or one named in ``upstream.trusted_realm_hosts``. Only a challenge from the
upstream's own host is learnt (a redirect target's 401 says nothing about how to talk
to the upstream), and a learnt challenge is forgotten after ``CHALLENGE_TTL``, so a
registry that stops asking for the trade is talked to directly again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from proxy.clock import SYSTEM, Clock
from proxy.config import UpstreamSettings
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.redact import remember_secret
from proxy.upstream import errors
from proxy.upstream.challenge import Challenge, parse_challenge

log = logging.getLogger("gar_proxy.auth")
# How long a host is remembered as wanting registry tokens.
CHALLENGE_TTL = 3600.0


class AccessTokens(Protocol):
    """A source of Google access tokens (``proxy.upstream.gcp.GoogleTokenSource``)."""

    async def token(self, *, wide: bool = False) -> str: ...

    async def refresh(self, stale: str, *, wide: bool = False) -> str: ...


@dataclass
class AuthState:
    """What one upstream request has tried so far; at most one refresh, one trade."""

    scope: str
    wide: bool = False
    sent_google_token: str | None = None
    refreshed: bool = False
    retraded: bool = False
    escalated: bool = False
    extra_scopes: list[str] = field(default_factory=list)


class TokenServiceBusy(RegistryError):
    """The token endpoint could not answer now (429, 5xx, or no connection): the same
    passing trouble as on any registry path of the host, so the call that needed the
    token backs off and tries again (``Upstream.send_to``); ``error`` if it gives up."""

    def __init__(self, error: RegistryError, status: int | None, retry_after: str | None):
        super().__init__(error.code, error.message, headers=error.headers)
        self.error = error
        self.answered = status  # None: no answer (a transport failure)
        self.retry_after = retry_after  # the answer's Retry-After, as sent


class SecretFile:
    """A password or token kept in a file (a mounted Kubernetes secret, a systemd
    credential) rather than in the config; read again when the file changes, so a
    rotated secret needs no restart. Trailing whitespace (the final newline) is dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None
        self._value = ""

    def read(self) -> str:
        try:
            info = self.path.stat()
            if self._seen != (info.st_mtime, info.st_size):
                self._value = self.path.read_text().rstrip()
                self._seen = (info.st_mtime, info.st_size)
                remember_secret(self._value)  # never shown, whatever renders it
        except OSError as error:
            raise RegistryError(
                ErrorCode.CREDENTIALS_REJECTED,
                f"cannot read gar-proxy's upstream secret {self.path}: {error.strerror}",
            ) from None
        return self._value


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _token_key(base: str, state: AuthState) -> tuple[str, str]:
    """Keyed by our own scope: a token bought with extra scopes a challenge named still
    serves plain requests for this repository."""
    return (base, state.scope + (" wide" if state.wide else ""))


def _host(url: str) -> str:
    parts = urlsplit(url)
    return (parts.netloc or "").lower()


class Authorizer:
    def __init__(
        self,
        settings: UpstreamSettings,
        tokens: AccessTokens | None,
        http: httpx.AsyncClient,
        *,
        read_only: bool = False,
        clock: Clock = SYSTEM,
    ) -> None:
        self._settings = settings
        self._read_only = read_only
        self._clock = clock
        self._tokens = tokens
        self._http = http
        self._password = SecretFile(settings.password_file) if settings.password_file else None
        self._token = SecretFile(settings.token_file) if settings.token_file else None
        self._challenges: dict[str, tuple[Challenge, float]] = {}  # base -> (it, until)
        self._registry_tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._buying: dict[tuple[str, str], asyncio.Lock] = {}
        # (kind, obtained) after each token trade; the app counts them in its metrics.
        self.observe: Callable[[str, bool], None] = lambda kind, ok: None

    @property
    def mode(self) -> str:
        return self._settings.auth

    def _challenge(self, base: str) -> Challenge | None:
        found = self._challenges.get(base)
        if found is None:
            return None
        if found[1] <= self._clock.monotonic():
            del self._challenges[base]
            return None
        return found[0]

    @property
    def tokens(self) -> AccessTokens | None:
        """The Google token source (``upstream.auth = gcp``), for health checks."""
        return self._tokens

    async def authorization(self, base: str, state: AuthState) -> str | None:
        """The ``Authorization`` value for a request to ``base`` (None: send nothing)."""
        challenge = self._challenge(base)
        if challenge is not None:
            return "Bearer " + await self._registry_token(base, challenge, state)
        if self.mode == "gcp":
            assert self._tokens is not None
            state.sent_google_token = await self._tokens.token(wide=state.wide)
            return "Bearer " + state.sent_google_token
        if self.mode in ("basic", "bearer"):
            return self._own_credentials()
        return None

    def explain(self) -> str:
        """Which of gar-proxy's own credentials upstream was sent (never their value),
        for the message a refused client reads; empty for Google credentials."""
        if self.mode == "bearer":
            return f"the token in upstream.token_file {self._settings.token_file}"
        if self.mode == "basic":
            where = self._settings.password_file or "upstream.password"
            return f"user {self._settings.username!r} with the password from {where}"
        return ""

    def _own_credentials(self) -> str:
        """``upstream.auth`` basic or bearer (a lower tier talking to an upper gar-proxy)."""
        if self.mode == "bearer":
            return "Bearer " + (self._token.read() if self._token else "")
        password = self._password.read() if self._password else self._settings.password
        return _basic(self._settings.username or "", password or "")

    async def should_retry_401(self, base: str, response: httpx.Response, state: AuthState) -> bool:
        """Prepare one more try after a 401, or say that another try cannot help."""
        if _host(str(response.url)) != _host(base):
            return False  # a redirect target's answer: nothing to learn, nothing to retry
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        if challenge is not None and challenge.scope_for(state.scope) != state.scope:
            state.extra_scopes = challenge.scope_for(state.scope).split(" ")
        if self._challenge(base) is not None:
            self.forget(base, state)
            if not state.retraded:
                state.retraded = True
                await self._refresh_google(state)
                return True
            return False
        if self.mode == "gcp" and not state.refreshed:
            await self._refresh_google(state)
            return True
        if challenge is not None and challenge.scheme == "bearer" and challenge.realm:
            self._challenges[base] = (challenge, self._clock.monotonic() + CHALLENGE_TTL)
            log.info("upstream %s wants registry tokens; trading credentials at its realm", base)
            return True
        return False

    def forget(self, base: str, state: AuthState) -> None:
        """Drop the registry token ``state``'s request was refused with: the next request
        trades anew instead of being refused once more (a streamed write cannot be tried
        again, so nothing else would drop it)."""
        self._registry_tokens.pop(_token_key(base, state), None)

    async def escalate(self, state: AuthState) -> bool:
        """After a 403 with a read-only token, try once with full cloud-platform scope."""
        if self.mode != "gcp" or not self._read_only or state.escalated:
            return False
        state.escalated = state.wide = True
        return True

    async def _refresh_google(self, state: AuthState) -> None:
        if self.mode == "gcp" and state.sent_google_token is not None and not state.refreshed:
            assert self._tokens is not None
            state.refreshed = True
            await self._tokens.refresh(state.sent_google_token, wide=state.wide)

    async def _realm_credentials(self, realm: str, base: str, state: AuthState) -> str | None:
        if self.mode == "none":
            return None
        realm_host = _host(realm)
        if realm_host != _host(base) and realm_host.split(":")[0] not in (
            self._settings.trusted_realm_hosts
        ):
            raise RegistryError(
                ErrorCode.DENIED,
                f"upstream asked for credentials at {realm_host}, which is not the upstream "
                f"host {_host(base)}; refusing to send them (trust it with "
                "upstream.trusted_realm_hosts)",
            )
        if self.mode in ("basic", "bearer"):
            return self._own_credentials()
        assert self._tokens is not None
        state.sent_google_token = await self._tokens.token(wide=state.wide)
        return _basic("oauth2accesstoken", state.sent_google_token)

    async def _registry_token(self, base: str, challenge: Challenge, state: AuthState) -> str:
        scopes = [state.scope, *[s for s in state.extra_scopes if s != state.scope]]
        key = _token_key(base, state)
        cached = self._registry_tokens.get(key)
        if cached and cached[1] > self._clock.monotonic():
            return cached[0]
        # Concurrent cold requests for one scope wait for a single trade at the realm.
        async with self._buying.setdefault(key, asyncio.Lock()):
            cached = self._registry_tokens.get(key)
            if cached and cached[1] > self._clock.monotonic():
                return cached[0]
            return await self._buy_token(base, challenge, state, scopes, key)

    async def _buy_token(
        self,
        base: str,
        challenge: Challenge,
        state: AuthState,
        scopes: list[str],
        key: tuple[str, str],
    ) -> str:
        realm = challenge.realm or ""
        headers = {}
        credentials = await self._realm_credentials(realm, base, state)
        if credentials:
            headers["Authorization"] = credentials
        # No scope at all (the upstream check's /v2/) asks for a login token, as docker login.
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("scope", s) for s in scopes if s
        ]
        if "service" in challenge.params:
            params.insert(0, ("service", challenge.params["service"]))
        try:
            response = await self._http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as error:
            raise TokenServiceBusy(errors.from_transport(error, realm), None, None) from None
        self.observe("registry", response.status_code == 200)
        if response.status_code != 200:
            refused = errors.from_token_service(
                response.status_code,
                response.headers,
                response.content,
                " ".join(scopes) or "a login",
            )
            if response.status_code in errors.RETRYABLE_STATUSES:
                wait = response.headers.get("retry-after")
                raise TokenServiceBusy(refused, response.status_code, wait)
            raise refused
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RegistryError(
                ErrorCode.UPSTREAM_BAD_GATEWAY, "upstream token service sent no JSON"
            )
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(ErrorCode.DENIED, "upstream token service sent no token")
        lifetime = token_lifetime(body.get("expires_in"))
        self._registry_tokens[key] = (token, self._clock.monotonic() + lifetime * 0.9)
        return token


def token_lifetime(expires_in: object) -> float:
    """Seconds a registry token is good for: its ``expires_in`` (a number, or a number
    as text), else the token spec's default of 60 (distribution's auth spec) when it is
    left out, unreadable or not positive, so a token is never bought per request.

    >>> token_lifetime(3600), token_lifetime("300"), token_lifetime("an hour")
    (3600.0, 300.0, 60.0)
    >>> token_lifetime(None), token_lifetime(-5), token_lifetime(float("nan"))
    (60.0, 60.0, 60.0)
    """
    try:
        seconds = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 60.0
    return seconds if 0 < seconds < float("inf") else 60.0
