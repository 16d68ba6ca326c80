"""The upstream client against small real servers on loopback: retries, auth, quotas."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.clock import ManualClock
from proxy.oci.errors import RegistryError
from proxy.oci.names import Repository
from proxy.upstream.calls import retry_after_seconds
from proxy.upstream.ratelimit import TokenBucket
from tests.upstream.scripted import Handler, ScriptServer, make_upstream, settings

REPO = Repository("proj/repo/img")


class FakeTokens:
    """Google tokens as GoogleTokenSource hands them out, without Google."""

    def __init__(self) -> None:
        self.current = "ya29.first-token"
        self.refreshes = 0

    async def token(self, *, wide: bool = False) -> str:
        return self.current + ("-wide" if wide else "")

    async def refresh(self, stale: str, *, wide: bool = False) -> str:
        if stale.startswith(self.current):
            self.refreshes += 1
            self.current = f"ya29.refreshed-{self.refreshes}"
        return await self.token(wide=wide)


def ok(request: Request, n: int) -> Response:
    return JSONResponse({"n": n})


async def test_429_with_retry_after_is_retried_after_the_pause(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    def handler(request: Request, n: int) -> Response:
        return Response(status_code=429, headers={"Retry-After": "1"}) if n == 1 else ok(request, n)

    script, url = script_server(handler)
    clock = ManualClock()
    upstream = make_upstream(settings(tmp_path, url), None, clock)
    response = await upstream.send("GET", REPO, "/manifests/latest")
    await upstream.aclose()
    assert response.status_code == 200
    assert len(script.seen) == 2
    # Backoff alone would be at most 0.02 s here (backoff_base 0.01): the pause is upstream's.
    assert clock.slept == [1.0]


async def test_two_503_then_200_succeeds(script_server: ScriptServer, tmp_path: Path) -> None:
    _script, url = script_server(lambda r, n: Response(status_code=503) if n <= 2 else ok(r, n))
    upstream = make_upstream(settings(tmp_path, url), None)
    response = await upstream.send("GET", REPO, "/blobs/x")
    await upstream.aclose()
    assert response.status_code == 200 and response.json() == {"n": 3}


async def test_persistent_500_gives_an_oci_error_after_bounded_retries(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    script, url = script_server(
        lambda r, n: JSONResponse({"errors": [{"code": "UNKNOWN", "message": "boom"}]}, 500)
    )
    upstream = make_upstream(settings(tmp_path, url, transport__retries="3"), None)
    response = await upstream.send("GET", REPO, "/manifests/latest")
    await upstream.aclose()
    assert response.status_code == 500 and len(script.seen) == 4
    from proxy.upstream.errors import from_response

    error = from_response(response, response.content)
    assert error.code.wire == "UNAVAILABLE" and error.status == 502
    assert "boom" in error.message


async def test_unreachable_upstream_is_an_oci_error(tmp_path: Path) -> None:
    upstream = make_upstream(settings(tmp_path, "http://127.0.0.1:9", transport__retries="1"), None)
    with pytest.raises(RegistryError) as raised:
        await upstream.send("GET", REPO, "/manifests/latest")
    await upstream.aclose()
    assert raised.value.code.wire == "UNAVAILABLE" and raised.value.status == 502


async def test_401_refreshes_the_google_token_once_and_retries(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    tokens = FakeTokens()

    def handler(request: Request, n: int) -> Response:
        if request.headers.get("authorization") == "Bearer ya29.refreshed-1":
            return ok(request, n)
        return Response(status_code=401)

    _script, url = script_server(handler)
    upstream = make_upstream(settings(tmp_path, url, upstream__auth="gcp"), tokens)
    responses = await asyncio.gather(
        *[upstream.send("GET", REPO, "/manifests/latest") for _ in range(20)]
    )
    await upstream.aclose()
    assert {r.status_code for r in responses} == {200}
    assert tokens.refreshes == 1


def _token_realm(registry_token: str, expect_basic: str | None) -> Handler:
    def handler(request: Request, n: int) -> Response:
        if request.url.path.endswith("/token"):
            if expect_basic is not None and request.headers.get("authorization") != expect_basic:
                return Response(status_code=401)
            return JSONResponse({"token": registry_token, "expires_in": 300})
        if request.headers.get("authorization") == f"Bearer {registry_token}":
            return ok(request, n)
        realm = f"{request.base_url}v2/token"
        return Response(
            status_code=401,
            headers={
                "WWW-Authenticate": f'Bearer realm="{realm}",service="reg",'
                'scope="repository:proj/repo/img:pull"'
            },
        )

    return handler


async def test_registry_token_dance_with_oauth2accesstoken(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    tokens = FakeTokens()
    basic = "Basic " + base64.b64encode(b"oauth2accesstoken:ya29.refreshed-1").decode()
    script, url = script_server(_token_realm("reg-token", basic))
    upstream = make_upstream(settings(tmp_path, url, upstream__auth="gcp"), tokens)
    first = await upstream.send("GET", REPO, "/manifests/latest")
    second = await upstream.send("GET", REPO, "/manifests/latest")
    await upstream.aclose()
    assert first.status_code == second.status_code == 200
    token_requests = [r for r in script.seen if r.url.path.endswith("/token")]
    assert len(token_requests) == 1  # cached per scope after the first trade
    assert token_requests[0].query_params.getlist("scope") == ["repository:proj/repo/img:pull"]
    assert token_requests[0].query_params["service"] == "reg"
    assert script.auth[-1] == "Bearer reg-token"  # no 401 round trip the second time


async def test_realm_on_another_host_gets_no_google_token(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    realm_script, realm_url = script_server(lambda r, n: JSONResponse({"token": "t"}))

    other_host = realm_url.replace("127.0.0.1", "localhost")

    def registry(request: Request, n: int) -> Response:
        return Response(
            status_code=401,
            headers={"WWW-Authenticate": f'Bearer realm="{other_host}/token"'},
        )

    _script, url = script_server(registry)
    upstream = make_upstream(settings(tmp_path, url, upstream__auth="gcp"), FakeTokens())
    with pytest.raises(RegistryError) as raised:
        await upstream.send("GET", REPO, "/manifests/latest")
    await upstream.aclose()
    assert raised.value.code.wire == "DENIED"
    assert "refusing" in raised.value.message
    assert realm_script.seen == []


async def test_403_with_read_only_token_escalates_scope_once(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    def handler(request: Request, n: int) -> Response:
        wide = (request.headers.get("authorization") or "").endswith("-wide")
        return ok(request, n) if wide else Response(status_code=403)

    script, url = script_server(handler)
    upstream = make_upstream(
        settings(tmp_path, url, upstream__auth="gcp", gcp__read_only="true"), FakeTokens()
    )
    response = await upstream.send("GET", REPO, "/manifests/latest")
    await upstream.aclose()
    assert response.status_code == 200 and len(script.seen) == 2


async def test_tokens_never_reach_the_logs(
    script_server: ScriptServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = FakeTokens()
    _script, url = script_server(_token_realm("secret-registry-token", None))
    upstream = make_upstream(settings(tmp_path, url, upstream__auth="gcp"), tokens)
    await upstream.send("GET", REPO, "/manifests/latest")
    await upstream.aclose()
    assert "ya29" not in caplog.text and "secret-registry-token" not in caplog.text


async def test_rate_limiter_holds_60_per_minute_on_a_fake_clock() -> None:
    clock = ManualClock()
    bucket = TokenBucket(60, clock=clock)
    times = []
    for _ in range(200):
        await bucket.acquire()
        times.append(clock.monotonic())
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 60.0)
        assert in_window <= 60
    assert times[-1] < 210.0  # and it does not starve: ~59 calls a minute in the long run


def test_retry_after_as_http_date_is_read_against_the_clock() -> None:
    clock = ManualClock(wall=1445412470.0)  # 07:27:50 GMT
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", clock.time()) == 10.0
    clock.advance(4)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", clock.time()) == 6.0
    assert retry_after_seconds("3", clock.time()) == 3.0
    assert retry_after_seconds("soon", clock.time()) is None


# --------------------------------------------------------------------------- redirects


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_write_follows_a_307_only_to_the_upstreams_own_host_with_a_replayable_body(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    elsewhere, elsewhere_url = script_server(lambda r, n: Response(status_code=201))

    def registry(request: Request, n: int) -> Response:
        if request.url.path.endswith("/moved"):
            return Response(status_code=201)
        target = {
            "/v2/proj/repo/img/same": f"{request.base_url}v2/proj/repo/img/moved",
            "/v2/proj/repo/img/away": f"{elsewhere_url}/v2/proj/repo/img/moved",
        }[request.url.path]
        return Response(status_code=307, headers={"Location": target})

    script, url = script_server(registry)
    upstream = make_upstream(settings(tmp_path, url), None)
    try:
        same = await upstream.send("PUT", REPO, "/same", content=b"manifest", write=True)
        assert same.status_code == 201
        assert [r.url.path for r in script.seen][-1] == "/v2/proj/repo/img/moved"
        with pytest.raises(RegistryError) as away:
            await upstream.send("PUT", REPO, "/away", content=b"manifest", write=True)
        assert away.value.status == 502 and "another host" in away.value.message
        assert elsewhere.seen == []  # nothing (no credentials, no bytes) went there
        with pytest.raises(RegistryError) as streamed:
            await upstream.send("PATCH", REPO, "/same", content=_body(b"chunk"), write=True)
        assert streamed.value.status == 502 and "streamed body" in streamed.value.message
        sent = len(script.seen)
        with pytest.raises(RegistryError) as lean:  # the same on the lean path (SEND)
            await upstream.send(
                "PATCH", REPO, "/same", content=_body(b"chunk"), write=True, lean_body=True
            )
        assert lean.value.status == 502 and "streamed body" in lean.value.message
        assert len(script.seen) == sent + 1  # the body went once, never to "/moved"
    finally:
        await upstream.aclose()


async def test_a_challenge_from_a_redirect_target_does_not_change_upstream_auth(
    script_server: ScriptServer, tmp_path: Path
) -> None:
    def other(request: Request, n: int) -> Response:
        realm = f"{request.base_url}token"
        return Response(status_code=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})

    _other, other_url = script_server(other)

    def registry(request: Request, n: int) -> Response:
        if request.url.path.endswith("/blobs/x"):
            return Response(status_code=307, headers={"Location": f"{other_url}/storage/x"})
        return ok(request, n)

    script, url = script_server(registry)
    upstream = make_upstream(settings(tmp_path, url, upstream__auth="gcp"), FakeTokens())
    try:
        refused = await upstream.send("GET", REPO, "/blobs/x")
        assert refused.status_code == 401  # handed back, not learnt from
        after = await upstream.send("GET", REPO, "/manifests/latest")
        assert after.status_code == 200
        assert script.auth[-1] == "Bearer ya29.first-token"  # still the Google token
    finally:
        await upstream.aclose()


async def test_a_learnt_challenge_expires(script_server: ScriptServer, tmp_path: Path) -> None:
    tokens = FakeTokens()
    script, url = script_server(_token_realm("reg-token", None))
    clock = ManualClock()
    upstream = make_upstream(settings(tmp_path, url, upstream__auth="gcp"), tokens, clock)
    try:
        assert (await upstream.send("GET", REPO, "/manifests/latest")).status_code == 200
        assert script.auth[-1] == "Bearer reg-token"
        clock.advance(3601)
        assert (await upstream.send("GET", REPO, "/manifests/latest")).status_code == 200
        sent = [
            a for a, r in zip(script.auth, script.seen, strict=True) if "token" not in r.url.path
        ]
        assert sent[-2] is not None and sent[-2].startswith("Bearer ya29.")  # direct again
        assert sent[-1] == "Bearer reg-token"  # and re-learnt
    finally:
        await upstream.aclose()
