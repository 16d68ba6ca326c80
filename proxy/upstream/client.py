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
import email.utils
import logging
import random
import ssl
import time
import urllib.request
from collections.abc import AsyncIterable, Mapping
from pathlib import Path

import httpx

from proxy import USER_AGENT, requestcontext
from proxy.clock import SYSTEM, Clock
from proxy.config import ConfigError, UpstreamSettings
from proxy.metrics import Metrics, status_class
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.redact import redact, without_secret_params
from proxy.upstream import errors, lean, patch_h11_httpcore, sockets
from proxy.upstream.auth import AccessTokens, Authorizer, AuthState
from proxy.upstream.ratelimit import RateLimits

log = logging.getLogger("gar_proxy.upstream")

Body = bytes | AsyncIterable[bytes] | None
patch_h11_httpcore.apply()  # larger reads, fewer copies for blob bodies
# A wait longer than this is not worth holding a client for; pass the 429 on instead.
MAX_RETRY_AFTER = 60.0
MAX_WRITE_REDIRECTS = 3
RECENT_ERRORS = 20
_OPERATIONS = (("/blobs/uploads", "upload"), ("/blobs/", "blob"), ("/manifests/", "manifest"),
               ("/tags/", "tags"), ("/referrers/", "referrers"))  # fmt: skip


def operation(method: str, path: str) -> str:
    """A bounded label for an upstream call: ``blob_get``, ``manifest_head``, ``upload_patch``.

    >>> operation("HEAD", "/manifests/1.0"), operation("PATCH", "/blobs/uploads/u?_state=x")
    ('manifest_head', 'upload_patch')
    """
    kind = next((k for marker, k in _OPERATIONS if marker in path), "other")
    return f"{kind}_{method.lower()}"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (``now``: epoch seconds).

    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> retry_after_seconds("3", now=0), retry_after_seconds("soon", now=0)
    (3.0, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - now)


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
            follow_redirects=True,  # httpx drops Authorization on a cross-origin redirect
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

    def base_url(self, location: str) -> str:
        return self.settings.base(location)

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
        location = await self.location(repo)
        base = self.base_url(location)
        url = f"{base}/v2/{repo.path}{path}"
        action = "pull,push" if write else "pull"
        state = AuthState(scope=f"repository:{repo.path}:{action}")
        state.extra_scopes = list(extra_scopes)
        replayable = content is None or isinstance(content, bytes)
        # Reads follow redirects (blob storage; httpx drops Authorization across
        # origins). Writes follow only a 307/308 to the upstream's own host, and only
        # with a body that can be sent again (``_write_redirect``).
        follow = method in ("GET", "HEAD")
        attempt = redirects = 0
        while True:
            await self._take_quota(repo, location, write)
            request = self.http.build_request(
                method, url, headers=dict(headers or {}), params=params, content=content
            )
            if lean_body:  # a blob body: its own connection, read into batches (lean/)
                request.extensions[lean.LEAN] = True
            authorization = await self.auth.authorization(base, state)
            if authorization:
                request.headers["Authorization"] = authorization
            started = time.perf_counter()  # a measurement (metrics), not policy: real time
            try:
                response = await self.http.send(request, stream=True, follow_redirects=follow)
            except httpx.HTTPError as error:
                self._observe(request, None, started, type(error).__name__, location)
                if replayable and attempt < self.settings.retries:
                    attempt += 1
                    self.metrics.upstream_retries.labels("transport").inc()
                    await self._backoff(
                        attempt, None, f"{type(error).__name__} on {method}", repo, request
                    )
                    continue
                # A streamed request body that failed on our side (the client went
                # away mid-chunk) is that failure, not upstream's.
                raise _body_failure(error) or errors.from_transport(error, url) from None
            self._observe(request, response.status_code, started, None, location)
            if not follow and response.is_redirect:
                await response.aclose()
                url, params = _write_redirect(response, method, base, replayable), None
                redirects += 1
                if redirects > MAX_WRITE_REDIRECTS:
                    raise RegistryError(
                        ErrorCode.UPSTREAM_BAD_GATEWAY, f"upstream redirected {method} in a loop"
                    )
                continue
            retry = await self._should_retry(response, base, state, replayable, attempt)
            if retry is None:
                if response.status_code in (401, 403):  # refused after any token trade
                    what = f"upstream_{response.status_code}"
                    self.metrics.credential_failures.labels(what).inc()
                    self.recent_errors.append((self.clock.time(), operation(method, path), what))
                if not stream:
                    try:
                        await response.aread()
                    except httpx.HTTPError as error:  # cut mid-body: upstream trouble too
                        raise errors.from_transport(error, url) from None
                return response
            await response.aclose()
            reason = status_class(response.status_code) if retry >= 0 else "auth"
            self.metrics.upstream_retries.labels(reason).inc()
            if retry >= 0:
                attempt += 1
                await self._backoff(
                    attempt, retry or None, f"HTTP {response.status_code}", repo, request
                )

    async def _should_retry(
        self,
        response: httpx.Response,
        base: str,
        state: AuthState,
        replayable: bool,
        attempt: int,
    ) -> float | None:
        """None: hand the answer back. -1: retry now (auth). >=0: back off, then retry."""
        status = response.status_code
        if status == 401 and replayable and await self.auth.should_retry_401(base, response, state):
            return -1.0
        if status == 403 and replayable and await self.auth.escalate(state):
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
        waited = await self.limits.bucket(repo.project, location, write=False).acquire()
        if write:
            waited += await self.limits.bucket(repo.project, location, write=True).acquire()
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
            fields = {"method": request.method, "url": without_secret_params(str(request.url)),
                      "operation": op, "status": status, "error": failure,
                      "duration_ms": round(seconds * 1000, 1),
                      "request_id": requestcontext.request_id()}  # fmt: skip
            log.debug("upstream call", extra=fields)

    async def _backoff(
        self,
        attempt: int,
        retry_after: float | None,
        why: str,
        repo: Repository,
        request: httpx.Request,
    ) -> None:
        settings = self.settings
        ceiling = min(settings.backoff_max, settings.backoff_base * 2**attempt)
        delay = random.uniform(0, ceiling)  # full jitter spreads a herd of retries
        if retry_after is not None:
            delay = max(delay, retry_after)
        host = _host(request.url)
        log.warning(
            "upstream %s for %s at %s; retry %d in %.2fs", why, repo.path, host, attempt, delay,
            extra={"request_id": requestcontext.request_id(), "repository": repo.path,
                   "upstream_host": host, "retry": attempt},
        )  # fmt: skip
        await self.clock.sleep(delay)


def _host(url: httpx.URL) -> str:
    """``host[:port]`` of an upstream URL, never its userinfo (for logs)."""
    return redact(f"{url.host}:{url.port}" if url.port else url.host)


def _write_redirect(response: httpx.Response, method: str, base: str, replayable: bool) -> str:
    """Where a redirected write may go again, or the error that says why not.

    A 301/302/303 would change the method; another host would get the credentials (or
    the bytes) meant for the upstream; a streamed body is already spent.
    """
    target = response.url.join(response.headers.get("location", ""))
    where = f"{target.scheme}://{target.netloc.decode()}{target.path}"
    if response.status_code not in (307, 308):
        why = f"with HTTP {response.status_code}, which would change the method"
    elif target.netloc != httpx.URL(base).netloc or target.scheme != httpx.URL(base).scheme:
        why = "to another host"
    elif not replayable:
        why = "after its streamed body was sent, which cannot be sent twice"
    else:
        return str(target)
    raise RegistryError(
        ErrorCode.UPSTREAM_BAD_GATEWAY,
        f"upstream redirected {method} to {where} {why}; not followed",
    )


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


def _body_failure(error: BaseException) -> RegistryError | None:
    """The ``RegistryError`` a request body raised, if that is what httpx reports."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, RegistryError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
