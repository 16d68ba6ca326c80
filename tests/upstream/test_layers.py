"""Each concern of an upstream call on its own: the retry policy, the observer, and the
client's layers (redirects, token trades, retries) each driven alone against a
scripted registry on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from proxy.clock import ManualClock
from proxy.metrics import Metrics
from proxy.oci.names import Repository
from proxy.upstream.auth import AuthState
from proxy.upstream.calls import Call, Unreachable
from proxy.upstream.client import Upstream
from proxy.upstream.observer import Observer
from proxy.upstream.retries import MAX_RETRY_AFTER, RetryPolicy
from tests.upstream.scripted import ScriptServer, make_upstream, settings

REPO = Repository("proj/repo/img", "us")


def call_to(upstream: Upstream, path: str) -> Call:
    """A GET of ``/v2/REPO{path}`` as ``send`` would make it, for a layer alone."""
    base = upstream.base_url("us")
    state = AuthState(scope=f"repository:{REPO.path}:pull")
    url = f"{base}/v2/{REPO.path}{path}"
    return Call("GET", REPO, "us", base, url, None, {}, None, False, False, None, state)


# --- the retry policy --------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_trouble_is_tried_again_until_the_retries_are_spent(status: int) -> None:
    policy = RetryPolicy(retries=2, backoff_base=0.5, backoff_max=30.0)
    assert policy.wait(status, None, attempt=0, now=0.0) == 0.0
    assert policy.wait(status, None, attempt=1, now=0.0) == 0.0
    assert policy.wait(status, None, attempt=2, now=0.0) is None


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 413, 505])
def test_answers_that_another_try_cannot_change_are_handed_back(status: int) -> None:
    policy = RetryPolicy(retries=4, backoff_base=0.5, backoff_max=30.0)
    assert policy.wait(status, "1", attempt=0, now=0.0) is None


def test_retry_after_is_a_floor_unless_it_is_too_long_to_hold_a_client() -> None:
    policy = RetryPolicy(retries=4, backoff_base=0.5, backoff_max=30.0)
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # 10 s after ``now``
    assert policy.wait(503, date, attempt=0, now=1445412470.0) == 10.0
    assert policy.wait(429, str(int(MAX_RETRY_AFTER)), attempt=0, now=0.0) == MAX_RETRY_AFTER
    assert policy.wait(429, str(int(MAX_RETRY_AFTER) + 1), attempt=0, now=0.0) is None
    assert policy.delay(1, 5.0, jitter=lambda low, high: high) == 5.0


def test_the_backoff_doubles_up_to_its_cap_with_full_jitter() -> None:
    policy = RetryPolicy(retries=10, backoff_base=0.5, backoff_max=3.0)
    asked: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    delays = [policy.delay(attempt, None, jitter=jitter) for attempt in range(1, 6)]
    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert all(low == 0 for low, _ in asked)


# --- the observer ------------------------------------------------------------------------


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_observer_counts_trouble_and_remembers_it_for_the_status_page() -> None:
    metrics, clock = Metrics(), ManualClock(50.0)
    seen = Observer(metrics, clock)
    blob = httpx.Request("GET", "https://us-docker.pkg.dev/v2/p/r/i/blobs/sha256:ab")
    seen.request(blob, 200, 0.1)
    seen.request(blob, 503, 0.1)
    seen.request(blob, None, 0.1, failure="ConnectError")
    seen.refused("HEAD", "https://us-docker.pkg.dev/v2/p/r/i/manifests/1", 401)
    errors = "garproxy_upstream_errors_total"
    assert _sample(metrics, errors, operation="blob_get", reason="5xx") == 1
    assert _sample(metrics, errors, operation="blob_get", reason="transport") == 1
    assert _sample(metrics, "garproxy_credential_failures_total", kind="upstream_401") == 1
    assert list(seen.recent_errors) == [
        (50.0, "blob_get", "HTTP 503"),
        (50.0, "blob_get", "ConnectError"),
        (50.0, "manifest_head", "upstream_401"),
    ]


def test_a_wait_for_quota_is_counted_only_when_there_was_one() -> None:
    metrics = Metrics()
    seen = Observer(metrics, ManualClock())
    seen.waited(REPO, "us", 0.0)
    assert _sample(metrics, "garproxy_ratelimit_waits_total") == 0
    seen.waited(REPO, "us", 1.5)
    assert _sample(metrics, "garproxy_ratelimit_waits_total") == 1
    assert _sample(metrics, "garproxy_ratelimit_wait_seconds_total") == 1.5


# --- the layers, each alone --------------------------------------------------------------


async def test_the_redirect_layer_follows_and_hands_back_trouble_untried(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    def handler(request: Request, n: int) -> Response:
        if request.url.path.endswith("/blobs/x"):
            return RedirectResponse("/download/x", status_code=302)
        return Response(status_code=503)

    script, url = script_server(handler)
    upstream = make_upstream(settings(tmp_path, url), None)
    try:
        response = await upstream._send_handling_redirects(call_to(upstream, "/blobs/x"))
        await response.aclose()
    finally:
        await upstream.aclose()
    assert response.status_code == 503  # retries are not this layer's
    assert [r.url.path for r in script.seen] == ["/v2/proj/repo/img/blobs/x", "/download/x"]


async def test_the_single_request_layer_raises_unreachable_and_leaves_the_choice(
    tmp_path: Path,
) -> None:
    url = "http://127.0.0.1:9"  # discard: nothing listens
    upstream = make_upstream(settings(tmp_path, url), None)
    try:
        with pytest.raises(Unreachable) as raised:
            await upstream._send_single_request(call_to(upstream, "/x"), f"{url}/x", None, 0)
    finally:
        await upstream.aclose()
    assert isinstance(raised.value.error, httpx.ConnectError)
    assert list(upstream.recent_errors)[-1][2] == "ConnectError"


async def test_the_auth_layer_trades_at_the_realm_then_tries_again_at_once(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    realm, realm_url = script_server(lambda r, n: JSONResponse({"token": "registry-token"}))

    def handler(request: Request, n: int) -> Response:
        if request.headers.get("authorization") == "Bearer registry-token":
            return JSONResponse({"ok": True})
        challenge = f'Bearer realm="{realm_url}/token",service="test"'
        return Response(status_code=401, headers={"WWW-Authenticate": challenge})

    script, url = script_server(handler)
    clock = ManualClock()
    keys = {"upstream__trusted_realm_hosts": "127.0.0.1"}
    upstream = make_upstream(settings(tmp_path, url, **keys), None, clock)
    try:
        response = await upstream._send_handling_auth(call_to(upstream, "/manifests/1"))
        await response.aread()
    finally:
        await upstream.aclose()
    assert response.status_code == 200
    assert script.auth == [None, "Bearer registry-token"]
    assert len(realm.seen) == 1
    assert clock.slept == []  # a token trade is no backoff


async def test_the_retry_layer_pauses_on_the_clock_between_tries(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    _script, url = script_server(
        lambda r, n: Response(status_code=502) if n < 3 else JSONResponse({"n": n})
    )
    clock = ManualClock()
    upstream = make_upstream(settings(tmp_path, url), None, clock)
    try:
        response = await upstream._send_handling_retries(call_to(upstream, "/manifests/1"))
        await response.aread()
    finally:
        await upstream.aclose()
    assert response.json() == {"n": 3}
    assert len(clock.slept) == 2
    assert all(0 <= pause <= 0.05 for pause in clock.slept)  # transport.backoff_max
