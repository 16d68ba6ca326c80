"""The upstream transport policy: one pooled httpx client, auth, retries, rate limits.

Policy lives here; bytes flow through ``httpx``. Only ``proxy.upstream.registry``
(the typed registry client) and ``proxy.upstream.google_api`` call it. Every call
names the repository it acts for (which picks the upstream base URL, the quota
bucket and the token scope)::

    response = await upstream.send("HEAD", repo, f"/blobs/{digest}")
    response.status_code   # any final answer; the typed client decides what it means

``send`` raises ``RegistryError`` only for transport failures and exhausted retries.
A call passes through layers, each with one concern, the way httpx's client sends
(``_send_handling_auth``, ``_send_handling_redirects``, ``_send_single_request``):

- ``_send_handling_retries``: another try after a transport failure, a rate limit or
  server trouble, for a body that can be sent again, after a pause
  (``proxy.upstream.retries``: backoff with full jitter, ``Retry-After``);
- ``_send_handling_auth``: another try after a 401 or 403 from the upstream's origin
  when a token trade can help (``proxy.upstream.auth``);
- ``_send_handling_redirects``: the redirects an answer names, on the rules of
  ``proxy.upstream.redirects``, and a new signed URL when one was refused;
- ``_send_single_request``: one HTTP request, with quota and credentials on the
  upstream's origin only, reported to the ``Observer`` (metrics, recent errors, log).

``_deliver`` then reads the body (unless streamed) and translates a failure there
(``proxy.upstream.errors``), as the retry layer translates a transport failure.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import httpx

from proxy import USER_AGENT
from proxy.clock import SYSTEM, Clock
from proxy.config import ConfigError, QuotaSettings, TransportSettings, UpstreamSettings
from proxy.metrics import Metrics, status_class
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.upstream import errors, lean, patch_h11_httpcore, redirects, sockets
from proxy.upstream.auth import AccessTokens, Authorizer, AuthState, TokenServiceBusy
from proxy.upstream.calls import ASKED, Body, Call, Unreachable, body_failure
from proxy.upstream.observer import Observer
from proxy.upstream.ratelimit import RateLimits
from proxy.upstream.retries import RetryPolicy

patch_h11_httpcore.apply()  # larger reads, fewer copies for blob bodies


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
        transport: TransportSettings,
        quotas: QuotaSettings,
        location: str,
        read_only: bool = False,
        http_transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = SYSTEM,
        metrics: Metrics | None = None,
    ) -> None:
        """``location``: where a repository is when nothing said (``routing.location``)."""
        self.settings = settings
        self.default_location = location
        self.clock = clock  # backoff pauses, quotas, the time of recent errors
        self.metrics = metrics or Metrics()
        self.observer = Observer(self.metrics, clock)
        self.recent_errors = self.observer.recent_errors  # for the status page
        self.retries = RetryPolicy.of(transport)
        self.http = http_client(transport, settings.ca_file, http_transport, clock)
        self.auth = Authorizer(settings, tokens, self.http, read_only=read_only, clock=clock)
        self.limits = RateLimits(quotas.reads_per_minute, quotas.writes_per_minute, clock)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def location(self, repo: Repository) -> str:
        return repo.location or self.default_location

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
        return await self._deliver(call, await self._send_handling_retries(call), stream)

    async def _send_handling_retries(self, call: Call) -> httpx.Response:
        """Up to an answer worth handing back; a transport failure raises once no try
        is left (or the body cannot be sent again)."""
        attempt = 0
        while True:
            try:
                response = await self._send_handling_auth(call)
            except TokenServiceBusy as busy:  # the realm's passing trouble: as the host's
                wait = self._token_wait(busy, attempt)
                if wait is None:
                    raise busy.error from None
                said = f"HTTP {busy.answered}" if busy.answered else "no answer"
                why = f"{said} from the token service"
                self.observer.retrying(status_class(busy.answered))
            except Unreachable as failure:
                if not (call.replayable and self.retries.may_retry(attempt)):
                    # A streamed request body that failed on our side (the client went
                    # away mid-chunk) is that failure, not upstream's.
                    error = failure.error
                    raise body_failure(error) or errors.from_transport(error, call.where) from None
                why, wait = f"transport failure on {call.method}", None
                self.observer.retrying("transport")
            else:
                wait = self._wait(call, response, attempt)
                if wait is None:
                    return response
                await response.aclose()
                why = f"HTTP {response.status_code}"
                self.observer.retrying(status_class(response.status_code))
            attempt += 1
            await self._pause(call, attempt, wait or None, why)

    def _wait(self, call: Call, response: httpx.Response, attempt: int) -> float | None:
        """None: hand ``response`` back; else the least pause before another try."""
        if not call.replayable:
            return None
        retry_after = response.headers.get("retry-after")
        return self.retries.wait(
            response.status_code, retry_after, attempt=attempt, now=self.clock.time()
        )

    def _token_wait(self, busy: TokenServiceBusy, attempt: int) -> float | None:
        """The pause before trading again at a realm that could not answer (docs/GAR.md
        A12), or None. Nothing of the call was sent yet, so its body does not matter."""
        if busy.answered is None:
            return 0.0 if self.retries.may_retry(attempt) else None
        now = self.clock.time()
        return self.retries.wait(busy.answered, busy.retry_after, attempt=attempt, now=now)

    async def _pause(self, call: Call, attempt: int, at_least: float | None, why: str) -> None:
        delay = self.retries.delay(attempt, at_least)
        self.observer.backing_off(why, call.repo, call.base, attempt, delay)
        await self.clock.sleep(delay)

    async def _send_handling_auth(self, call: Call) -> httpx.Response:
        """Another try, at once, while a token trade can turn a refusal into an answer
        (each kind of trade once per call: ``AuthState``)."""
        while True:
            response = await self._send_handling_redirects(call)
            if not await self._traded(call, response):
                return response
            await response.aclose()
            self.observer.retrying("auth")

    async def _traded(self, call: Call, response: httpx.Response) -> bool:
        """Whether new credentials were got that may change ``response``: only for an
        answer from the upstream's origin, to a body that can be sent again."""
        if not redirects.same_origin(response.url, call.base):
            return False
        if not call.replayable:  # a streamed body cannot go again; the next request
            if response.status_code == 401:  # trades anew rather than be refused too
                self.auth.forget(call.base, call.state)
            return False
        if response.status_code == 401:
            return await self.auth.should_retry_401(call.base, response, call.state)
        if response.status_code == 403:
            return await self.auth.escalate(call.state)
        return False

    async def _send_handling_redirects(self, call: Call) -> httpx.Response:
        """The request and the redirects it meets, up to an answer that is not one. A
        signed download refused (expired, say) asks the registry for a new one, once."""
        target: httpx.URL | str = call.url
        query, hops, renewed = call.params, 0, False
        while True:
            response = await self._send_single_request(call, target, query, hops)
            if response.is_redirect:
                await response.aclose()
                hops += 1
                if hops > redirects.MAX_REDIRECTS:
                    raise redirects.loop(call.method)
                target = redirects.next_hop(response, call.method, call.base, call.replayable)
                query = None
            elif hops and not renewed and response.status_code in (400, 401, 403):
                await response.aclose()
                target, query, hops, renewed = call.url, call.params, 0, True
            else:
                return response

    async def _send_single_request(
        self, call: Call, target: httpx.URL | str, query: Mapping[str, str] | None, hops: int
    ) -> httpx.Response:
        """One HTTP request of ``call``; a transport failure raises ``Unreachable``."""
        request = await self._request(call, target, query)
        # A redirect's target (a signed download) is named by what was asked for.
        shown = call.label if not hops else f"{call.where} (redirect {hops})"
        started = time.perf_counter()  # a measurement (metrics), not policy: real time
        seen = {"label": shown, "location": call.location}
        try:
            response = await self.http.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as error:
            failure = type(error).__name__
            self.observer.request(request, None, time.perf_counter() - started, failure, **seen)
            raise Unreachable(error) from error
        self.observer.request(request, response.status_code, time.perf_counter() - started, **seen)
        return response

    async def _request(
        self, call: Call, target: httpx.URL | str, query: Mapping[str, str] | None
    ) -> httpx.Request:
        """One HTTP request of ``call``: quota and credentials only on the upstream's
        origin, where every request counts (redirect hops too: docs/GAR.md Q2)."""
        own = redirects.same_origin(target, call.base)
        if own:
            waited = await self.limits.take(call.repo.project, call.location, write=call.write)
            self.observer.waited(call.repo, call.location, waited)
        request = self.http.build_request(
            call.method, target, headers=call.headers, params=query, content=call.content
        )
        if call.lean_body:  # a blob body: lean/ reads a GET's in batches, sends an upload's
            request.extensions[lean.LEAN if call.method == "GET" else lean.SEND] = True
        authorization = await self.auth.authorization(call.base, call.state) if own else None
        if authorization:
            request.headers["Authorization"] = authorization
        return request

    async def _deliver(self, call: Call, response: httpx.Response, stream: bool) -> httpx.Response:
        """The final answer, read whole unless ``stream``; named as asked (``ASKED``)."""
        if response.status_code in (401, 403):  # refused after any token trade
            self.observer.refused(call.method, call.url, response.status_code)
        response.extensions[ASKED] = call.where
        if not stream:
            try:
                await response.aread()
            except httpx.HTTPError as error:  # cut mid-body: upstream trouble too
                raise errors.from_transport(error, call.where) from None
        return response


def http_client(
    settings: TransportSettings,
    ca_file: Path | None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock = SYSTEM,
) -> httpx.AsyncClient:
    """The pooled client every upstream call goes through (``transport``: a test's)."""
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive,
        keepalive_expiry=settings.keepalive_expiry,
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        limits=limits,
        http2=settings.http2,
        transport=transport or _transport(settings, ca_file, limits, clock),
        # Registry calls follow redirects in ``send_to`` itself (each hop charged to
        # the quota, credentials only on the upstream's origin: redirects.py); the
        # other users of this client (token realm, REST APIs) keep httpx's, which
        # drops Authorization on a cross-origin redirect.
        follow_redirects=True,
        # HTTP(S)_PROXY, NO_PROXY and SSL_CERT_FILE, like google-auth's token calls
        # and every other tool on the machine (httpx reads no .netrc since 0.24).
        trust_env=True,
        verify=tls_verification(ca_file),
        headers={"User-Agent": USER_AGENT},
    )


def _transport(
    settings: TransportSettings, ca_file: Path | None, limits: httpx.Limits, clock: Clock
) -> httpx.AsyncBaseTransport | None:
    """httpx's pool with TCP keep-alive, under the lean path for blob bodies unless it
    is off; None (httpx builds its own) behind an egress proxy, whose support httpx
    turns off for a transport given to it. Its connections go to the proxy then, with
    no TCP keep-alive of ours."""
    if _egress_proxied():
        return None
    inner = httpx.AsyncHTTPTransport(
        verify=tls_verification(ca_file),
        http2=settings.http2,
        limits=limits,
        socket_options=sockets.OPTIONS,
    )
    if not settings.lean_bodies:
        return inner
    return lean.LeanTransport(
        inner,
        lean.lean_ssl_context(tls_verification(ca_file)),  # a context of its own
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
