"""The upstream transport policy: one pooled httpx client, auth, retries, rate limits.

Policy lives here; bytes flow through ``httpx``. Only ``proxy.upstream.registry``
(the typed registry client) and ``proxy.upstream.google_api`` call it. Every call
names the repository it acts for (which picks the upstream base URL, the quota
bucket and the token scope)::

    response = await upstream.send("HEAD", repo, f"/blobs/{digest}")
    response.status_code   # any final answer; the typed client decides what it means

``send`` raises ``RegistryError`` only for transport failures and exhausted retries.
Bodies that can be replayed (bytes, or none) are retried on 429, 5xx and connection
errors with exponential backoff and full jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import collections
import logging
import random
import ssl
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import httpx

from proxy import USER_AGENT, requestcontext
from proxy.clock import SYSTEM, Clock
from proxy.config import ConfigError, UpstreamSettings
from proxy.metrics import Metrics, status_class
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.redact import redact, without_secret_params
from proxy.upstream import errors, lean, patch_h11_httpcore, redirects, sockets
from proxy.upstream.auth import AccessTokens, Authorizer, AuthState
from proxy.upstream.calls import ASKED, Body, Call, body_failure, operation, retry_after_seconds
from proxy.upstream.ratelimit import RateLimits

log = logging.getLogger("gar_proxy.upstream")

patch_h11_httpcore.apply()  # larger reads, fewer copies for blob bodies
# A wait longer than this is not worth holding a client for; pass the 429 on instead.
MAX_RETRY_AFTER = 60.0
RECENT_ERRORS = 20


def tls_verification(ca_file: Path | None) -> ssl.SSLContext | bool:
    """The default trust (certifi, or SSL_CERT_FILE), plus ``upstream.ca_file``: a
    private registry's CA or a TLS-intercepting egress proxy's."""
    if ca_file is None:
        return True
    context = httpx.create_ssl_context(trust_env=True)
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"upstream.ca_file ({ca_file}): {error}") from None
    return context


class Upstream:
    def __init__(
        self,
        settings: UpstreamSettings,
        tokens: AccessTokens | None,
        *,
        read_only: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = SYSTEM,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock  # backoff pauses, quotas, the time of recent errors
        self.metrics = metrics or Metrics()
        # The last few failed calls, for the status page: (time, operation, what).
        self.recent_errors: collections.deque[tuple[float, str, str]] = collections.deque(
            maxlen=RECENT_ERRORS
        )
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_keepalive,
            keepalive_expiry=settings.keepalive_expiry,
        )
        if transport is None:
            transport = _transport(settings, limits, clock)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            limits=limits,
            http2=settings.http2,
            transport=transport,
            # Registry calls follow redirects in ``send_to`` itself (each hop charged to
            # the quota, credentials only on the upstream's origin: redirects.py); the
            # other users of this client (token realm, REST APIs) keep httpx's, which
            # drops Authorization on a cross-origin redirect.
            follow_redirects=True,
            # HTTP(S)_PROXY, NO_PROXY and SSL_CERT_FILE, like google-auth's token calls
            # and every other tool on the machine (httpx reads no .netrc since 0.24).
            trust_env=True,
            verify=tls_verification(settings.ca_file),
            headers={"User-Agent": USER_AGENT},
        )
        self.auth = Authorizer(settings, tokens, self.http, read_only=read_only, clock=clock)
        self.limits = RateLimits(
            settings.read_rate_per_minute, settings.write_rate_per_minute, clock
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def location(self, repo: Repository) -> str:
        return repo.location or self.settings.location

    def base_url(self, location: str, *, regional: bool = False) -> str:
        return self.settings.base(location, regional=regional)

    async def send(
        self,
        method: str,
        repo: Repository,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: Body = None,
        write: bool = False,
        stream: bool = False,
        extra_scopes: tuple[str, ...] = (),
        lean_body: bool = False,
    ) -> httpx.Response:
        """One logical request to ``/v2/<repo>{path}``; ``path`` starts with '/'."""
        base = self.base_url(await self.location(repo), regional=repo.regional)
        return await self.send_to(
            method, repo, f"{base}/v2/{repo.path}{path}", headers=headers, params=params,
            content=content, write=write, stream=stream, extra_scopes=extra_scopes,
            lean_body=lean_body,
        )  # fmt: skip

    async def send_to(
        self,
        method: str,
        repo: Repository,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: Body = None,
        write: bool = False,
        stream: bool = False,
        extra_scopes: tuple[str, ...] = (),
        lean_body: bool = False,
        label: str | None = None,
    ) -> httpx.Response:
        """One logical request to ``url``, which must be on the upstream's own origin
        (an upload session GAR handed out may be any path there). ``label`` stands for
        the URL in errors and logs: an upload session's path is its credential."""
        location = await self.location(repo)
        base = self.base_url(location, regional=repo.regional)
        if not redirects.same_origin(url, base):
            raise RegistryError(
                ErrorCode.UPSTREAM_BAD_GATEWAY,
                f"refused to send {method} to {redirects.host_of(url)}: not the upstream's host",
            )
        state = AuthState(scope=f"repository:{repo.path}:{'pull,push' if write else 'pull'}")
        state.extra_scopes = list(extra_scopes)
        call = Call(method, repo, location, base, url, params, dict(headers or {}), content,
                     write, lean_body, label, state)  # fmt: skip
        attempt = 0
        while True:
            response = await self._attempt(call, attempt)
            if response is None:  # a transport failure worth another try
                attempt += 1
                self.metrics.upstream_retries.labels("transport").inc()
                await self._backoff(attempt, None, f"transport failure on {method}", call)
                continue
            own = redirects.same_origin(response.url, base)
            retry = await self._should_retry(response, base, state, call.replayable, attempt, own)
            if retry is None:
                return await self._deliver(call, response, stream)
            await response.aclose()
            reason = status_class(response.status_code) if retry >= 0 else "auth"
            self.metrics.upstream_retries.labels(reason).inc()
            if retry >= 0:
                attempt += 1
                await self._backoff(attempt, retry or None, f"HTTP {response.status_code}", call)

    async def _attempt(self, call: Call, attempt: int) -> httpx.Response | None:
        """The request and the redirects it meets, up to an answer; None when it failed
        on the way in a way worth another try (the caller backs off)."""
        target: httpx.URL | str = call.url
        query, hops, renewed = call.params, 0, False
        while True:
            request = await self._request(call, target, query)
            # A redirect's target (a signed download) is named by what was asked for.
            shown = call.label if not hops else f"{call.where} (redirect {hops})"
            started = time.perf_counter()  # a measurement (metrics), not policy: real time
            try:
                response = await self.http.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as error:
                self._observe(request, None, started, type(error).__name__, shown, call.location)
                if call.replayable and attempt < self.settings.retries:
                    return None
                # A streamed request body that failed on our side (the client went
                # away mid-chunk) is that failure, not upstream's.
                raise body_failure(error) or errors.from_transport(error, call.where) from None
            self._observe(request, response.status_code, started, None, shown, call.location)
            if response.is_redirect:
                await response.aclose()
                hops += 1
                if hops > redirects.MAX_REDIRECTS:
                    raise redirects.loop(call.method)
                target = redirects.next_hop(response, call.method, call.base, call.replayable)
                query = None
                continue
            if hops and not renewed and response.status_code in (400, 401, 403):
                # A signed download refused (expired, say): ask the registry for a new one.
                await response.aclose()
                target, query, hops, renewed = call.url, call.params, 0, True
                continue
            return response

    async def _request(
        self, call: Call, target: httpx.URL | str, query: Mapping[str, str] | None
    ) -> httpx.Request:
        """One HTTP request of ``call``: quota and credentials only on the upstream's
        origin, where every request counts (redirect hops too: docs/GAR.md Q2)."""
        own = redirects.same_origin(target, call.base)
        if own:
            await self._take_quota(call.repo, call.location, call.write)
        request = self.http.build_request(
            call.method, target, headers=call.headers, params=query, content=call.content
        )
        if call.lean_body:  # a blob body: its own connection, read into batches (lean.py)
            request.extensions[lean.LEAN] = True
        authorization = await self.auth.authorization(call.base, call.state) if own else None
        if authorization:
            request.headers["Authorization"] = authorization
        return request

    async def _deliver(self, call: Call, response: httpx.Response, stream: bool) -> httpx.Response:
        """The final answer, read whole unless ``stream``; named as asked (``ASKED``)."""
        if response.status_code in (401, 403):  # refused after any token trade
            what = f"upstream_{response.status_code}"
            self.metrics.credential_failures.labels(what).inc()
            op = operation(call.method, httpx.URL(call.url).path)
            self.recent_errors.append((self.clock.time(), op, what))
        response.extensions[ASKED] = call.where
        if not stream:
            try:
                await response.aread()
            except httpx.HTTPError as error:  # cut mid-body: upstream trouble too
                raise errors.from_transport(error, call.where) from None
        return response

    async def _should_retry(
        self,
        response: httpx.Response,
        base: str,
        state: AuthState,
        replayable: bool,
        attempt: int,
        own: bool = True,
    ) -> float | None:
        """None: hand the answer back. -1: retry now (auth). >=0: back off, then retry.
        ``own``: the answer came from the upstream's origin (a token trade can help)."""
        status = response.status_code
        auth = replayable and own
        if status == 401 and auth and await self.auth.should_retry_401(base, response, state):
            return -1.0
        if status == 403 and auth and await self.auth.escalate(state):
            return -1.0
        if status not in errors.RETRYABLE_STATUSES or not replayable:
            return None
        if attempt >= self.settings.retries:
            return None
        wait = retry_after_seconds(response.headers.get("retry-after"), self.clock.time())
        if wait is not None and wait > MAX_RETRY_AFTER:
            return None
        return wait or 0.0

    async def _take_quota(self, repo: Repository, location: str, write: bool) -> None:
        waited = await self.limits.take(repo.project, location, write=write)
        if waited:
            self.metrics.ratelimit_waits.inc()
            self.metrics.ratelimit_wait_seconds.inc(waited)
            log.info("rate limit: waited %.2fs for quota (%s/%s)", waited, repo.project, location)

    def _observe(
        self,
        request: httpx.Request,
        status: int | None,
        started: float,
        failure: str | None,
        label: str | None = None,
        location: str | None = None,
    ) -> None:
        """One upstream call: metrics, the request's count, a debug line (no secrets)."""
        seconds = time.perf_counter() - started
        op = operation(request.method, request.url.path)
        self.metrics.upstream_seconds.labels(op, status_class(status)).observe(seconds)
        if status is None:
            self.metrics.upstream_errors.labels(op, "transport").inc()
            self.recent_errors.append((self.clock.time(), op, failure or "transport error"))
        elif status == 429 or status >= 500:
            self.metrics.upstream_errors.labels(op, str(status) if status == 429 else "5xx").inc()
            self.recent_errors.append((self.clock.time(), op, f"HTTP {status}"))
        requestcontext.note_upstream_call(status, _host(request.url), location)
        if log.isEnabledFor(logging.DEBUG):
            url = label or without_secret_params(str(request.url))
            fields = {"method": request.method, "url": url,
                      "operation": op, "status": status, "error": failure,
                      "duration_ms": round(seconds * 1000, 1),
                      "request_id": requestcontext.request_id()}  # fmt: skip
            log.debug("upstream call", extra=fields)

    async def _backoff(self, attempt: int, retry_after: float | None, why: str, call: Call) -> None:
        settings = self.settings
        ceiling = min(settings.backoff_max, settings.backoff_base * 2**attempt)
        delay = random.uniform(0, ceiling)  # full jitter spreads a herd of retries
        if retry_after is not None:
            delay = max(delay, retry_after)
        host, repository = _host(httpx.URL(call.base)), call.repo.path
        log.warning(
            "upstream %s for %s at %s; retry %d in %.2fs", why, repository, host, attempt, delay,
            extra={"request_id": requestcontext.request_id(), "repository": repository,
                   "upstream_host": host, "retry": attempt},
        )  # fmt: skip
        await self.clock.sleep(delay)


def _host(url: httpx.URL) -> str:
    """``host[:port]`` of an upstream URL, never its userinfo (for logs)."""
    return redact(f"{url.host}:{url.port}" if url.port else url.host)


def _transport(
    settings: UpstreamSettings, limits: httpx.Limits, clock: Clock
) -> httpx.AsyncBaseTransport | None:
    """httpx's pool with TCP keep-alive, under the lean path for blob bodies unless it
    is off; None (httpx builds its own) behind an egress proxy, whose support httpx
    turns off for a transport given to it. Its connections go to the proxy then, with
    no TCP keep-alive of ours."""
    if _egress_proxied():
        return None
    inner = httpx.AsyncHTTPTransport(
        verify=tls_verification(settings.ca_file),
        http2=settings.http2,
        limits=limits,
        socket_options=sockets.OPTIONS,
    )
    if not settings.lean_bodies:
        return inner
    return lean.LeanTransport(
        inner,
        lean.lean_ssl_context(tls_verification(settings.ca_file)),  # a context of its own
        settings.max_connections,
        max_idle=settings.max_keepalive,
        idle_expiry=settings.keepalive_expiry,
        clock=clock,
    )


def _egress_proxied() -> bool:
    """HTTP(S)_PROXY or ALL_PROXY set: httpx carries every call (a transport of our own
    would turn its proxy support off), so blob bodies take httpx's path too."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))
