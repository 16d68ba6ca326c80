"""GoogleTokenSource against a fake OAuth endpoint and a fake metadata server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.clock import SYSTEM, Clock, ManualClock
from proxy.config import Settings, load_settings
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.upstream.gcp import CLOUD_PLATFORM, CLOUD_PLATFORM_READ_ONLY, GoogleTokenSource
from testkit.fakes.google import FakeMetadata, FakeOAuth
from testkit.servers import accept_queue, bind_loopback

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    fake = FakeOAuth()
    with fake.serving():
        yield fake


@pytest.fixture
def refused_host() -> str:
    """host:port where nothing listens: connections are refused at once."""
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    return f"127.0.0.1:{port}"


class Silent:
    """host:port that accepts connections (in the kernel backlog) but never answers;
    ``asked`` counts the connections made to it (they wait in its accept queue)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.host = f"127.0.0.1:{sock.getsockname()[1]}"

    @property
    def asked(self) -> int:
        return accept_queue(self.sock)[0]


@pytest.fixture
def silent() -> Iterator[Silent]:
    sock = bind_loopback()
    sock.listen(16)
    try:
        yield Silent(sock)
    finally:
        sock.close()


@pytest.fixture
def settings_for(tmp_path: Path, refused_host: str) -> Any:
    """Settings from an environment with HOME in tmp (no real ADC) and no metadata server."""

    def build(**env: str) -> Settings:
        return load_settings(env={"HOME": str(tmp_path), "GCE_METADATA_HOST": refused_host, **env})

    return build


@contextlib.asynccontextmanager
async def token_source(
    settings: Settings, token_uri: str | None = None, clock: Clock = SYSTEM
) -> AsyncIterator[GoogleTokenSource]:
    source = GoogleTokenSource(
        settings.gcp, timeout=settings.transport.timeout, token_uri=token_uri, clock=clock
    )
    try:
        yield source
    finally:
        await source.aclose()


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def adc_path(home: Path) -> Path:
    return home / ".config/gcloud/application_default_credentials.json"


# --- each credential source -------------------------------------------------------------------


async def test_key_file(oauth: FakeOAuth, tmp_path: Path, settings_for: Any) -> None:
    key = oauth.service_account()
    path = write_json(tmp_path / "key.json", key.info)
    async with token_source(settings_for(GOOGLE_APPLICATION_CREDENTIALS=str(path))) as tokens:
        token = await tokens.token()
        assert tokens.source == f"key file {path}"
        assert await tokens.token() == token  # cached: no second request
    assert oauth.is_valid(token)
    assert oauth.issued[token].subject == key.email
    assert oauth.issued[token].scopes == (CLOUD_PLATFORM,)
    assert oauth.token_requests == 1


async def test_inline_key(oauth: FakeOAuth, settings_for: Any) -> None:
    key = oauth.service_account()
    async with token_source(settings_for(GAR_SERVICE_ACCOUNT_KEY=json.dumps(key.info))) as tokens:
        token = await tokens.token()
        assert tokens.source == "inline key (GAR_SERVICE_ACCOUNT_KEY)"
    assert oauth.issued[token].subject == key.email


async def test_adc_authorized_user(oauth: FakeOAuth, tmp_path: Path, settings_for: Any) -> None:
    user = oauth.authorized_user()
    path = write_json(adc_path(tmp_path), user)
    # google-auth pins gcloud logins to oauth2.googleapis.com; token_uri redirects them here.
    async with token_source(settings_for(), oauth.token_uri) as tokens:
        token = await tokens.token()
        assert tokens.source == f"application default credentials {path}"
    assert oauth.issued[token].subject == user["client_id"]
    assert oauth.issued[token].scopes == (CLOUD_PLATFORM,)


_METADATA_SCRIPT = """
import asyncio, json, sys
from proxy.config import load_settings
from proxy.upstream.gcp import GoogleTokenSource

async def main():
    tokens = GoogleTokenSource(load_settings(env=json.loads(sys.argv[1])).gcp)
    try:
        return {"token": await tokens.token(), "source": tokens.source}
    finally:
        await tokens.aclose()

print(json.dumps(asyncio.run(main())))
"""


@pytest.mark.parametrize("in_process_env", [True, False], ids=["process-env", "settings-only"])
def test_metadata_server(tmp_path: Path, in_process_env: bool) -> None:
    """google-auth reads GCE_METADATA_HOST at import, so each case is a fresh interpreter:
    with the variable in the process environment, and only in the settings (as from TOML)."""
    metadata = FakeMetadata()
    with metadata.serving() as url:
        host = url.removeprefix("http://")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
        if in_process_env:
            env |= {"GCE_METADATA_HOST": host, "GCE_METADATA_IP": host}
        settings_env = {"HOME": str(tmp_path), "GCE_METADATA_HOST": host}
        done = subprocess.run(
            [sys.executable, "-c", _METADATA_SCRIPT, json.dumps(settings_env)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["source"] == "metadata server"
    assert metadata.is_valid(result["token"])
    assert metadata.issued[result["token"]].scopes == (CLOUD_PLATFORM,)
    assert metadata.token_requests == 1


# --- one refresh however many callers ---------------------------------------------------------


async def test_concurrent_callers_with_expired_token_cause_one_refresh(
    oauth: FakeOAuth, settings_for: Any
) -> None:
    key = oauth.service_account()
    async with token_source(settings_for(GAR_SERVICE_ACCOUNT_KEY=json.dumps(key.info))) as tokens:
        oauth.expires_in = 0  # the first token is stale as soon as it arrives
        expired = await tokens.token()
        oauth.expires_in, oauth.delay_seconds = 3600, 0.2
        results = await asyncio.gather(*(tokens.token() for _ in range(50)))
    assert oauth.token_requests == 2
    assert len(set(results)) == 1
    assert results[0] != expired


async def test_a_token_is_renewed_when_the_clock_reaches_its_margin(
    oauth: FakeOAuth, settings_for: Any
) -> None:
    """An hour's token is used for 55 minutes (a 300 s margin), counted on the clock."""
    key = oauth.service_account()
    clock = ManualClock()
    settings = settings_for(GAR_SERVICE_ACCOUNT_KEY=json.dumps(key.info))
    async with token_source(settings, clock=clock) as tokens:
        first = await tokens.token()
        remaining = tokens.expires_in()
        assert remaining is not None and 3200 < remaining <= 3300
        clock.advance(remaining - 1)
        assert await tokens.token() == first
        clock.advance(2)
        second = await tokens.token()
    assert second != first and oauth.token_requests == 2


async def test_concurrent_refreshes_of_one_stale_token_cause_one_refresh(
    oauth: FakeOAuth, settings_for: Any
) -> None:
    key = oauth.service_account()
    async with token_source(settings_for(GAR_SERVICE_ACCOUNT_KEY=json.dumps(key.info))) as tokens:
        stale = await tokens.token()
        oauth.delay_seconds = 0.2
        results = await asyncio.gather(*(tokens.refresh(stale) for _ in range(50)))
        assert oauth.token_requests == 2
        assert len(set(results)) == 1
        assert results[0] != stale
        # A latecomer with the same stale token gets the new one, without another refresh.
        assert await tokens.refresh(stale) == results[0]
        assert await tokens.token() == results[0]
    assert oauth.token_requests == 2


# --- source order and fall-through ------------------------------------------------------------


async def test_key_file_beats_inline_key_beats_adc(
    oauth: FakeOAuth, tmp_path: Path, settings_for: Any
) -> None:
    file_key, inline_key = oauth.service_account(), oauth.service_account()
    path = write_json(tmp_path / "key.json", file_key.info)
    write_json(adc_path(tmp_path), oauth.authorized_user())
    inline = json.dumps(inline_key.info)

    everything = settings_for(
        GOOGLE_APPLICATION_CREDENTIALS=str(path), GAR_SERVICE_ACCOUNT_KEY=inline
    )
    async with token_source(everything) as tokens:
        assert oauth.issued[await tokens.token()].subject == file_key.email
    async with token_source(settings_for(GAR_SERVICE_ACCOUNT_KEY=inline)) as tokens:
        assert oauth.issued[await tokens.token()].subject == inline_key.email


async def test_missing_key_file_falls_through_with_warning(
    oauth: FakeOAuth, tmp_path: Path, settings_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = oauth.service_account()
    missing = tmp_path / "gone.json"
    settings = settings_for(
        GOOGLE_APPLICATION_CREDENTIALS=str(missing), GAR_SERVICE_ACCOUNT_KEY=json.dumps(key.info)
    )
    async with token_source(settings) as tokens:
        assert oauth.issued[await tokens.token()].subject == key.email
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(missing) in r.getMessage() for r in warnings)


async def test_adc_used_while_metadata_server_is_silent(
    oauth: FakeOAuth, tmp_path: Path, silent: Silent
) -> None:
    path = write_json(adc_path(tmp_path), oauth.authorized_user())
    settings = load_settings(env={"HOME": str(tmp_path), "GCE_METADATA_HOST": silent.host})
    async with token_source(settings, oauth.token_uri) as tokens:
        assert oauth.is_valid(await tokens.token())
        assert tokens.source == f"application default credentials {path}"
    assert silent.asked == 0  # the metadata server was never asked


# A refused connection must not wait for the metadata timeout; with an hour's timeout a
# wait would show as this test timing out.
@pytest.mark.timeout(60)
async def test_no_source_and_metadata_refused_fails_at_once(settings_for: Any) -> None:
    async with token_source(settings_for(GAR_PROXY_GCP_METADATA_TIMEOUT="1h")) as tokens:
        with pytest.raises(RegistryError) as caught:
            await tokens.token()
    assert caught.value.code.wire == "DENIED"
    assert caught.value.status == 403  # not 401: logging in to the proxy would not help
    assert "no Google credentials found" in caught.value.message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message


async def test_no_source_and_metadata_silent_fails_within_timeout(
    tmp_path: Path, silent: Silent, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"HOME": str(tmp_path), "GCE_METADATA_HOST": silent.host}
    assert load_settings(env=env).gcp.metadata_timeout == 2.0  # the default
    settings = load_settings(env={**env, "GAR_PROXY_GCP_METADATA_TIMEOUT": "0.3s"})
    clock = ManualClock()
    async with token_source(settings, clock=clock) as tokens:
        # Concurrent callers share one discovery rather than waiting in turn.
        results = await asyncio.gather(*(tokens.token() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RegistryError) and r.status == 403 for r in results)
        assert silent.asked == 1
        assert "did not answer within 0.3 s" in caplog.text  # the timeout ended the wait
        # For a while afterwards requests fail at once rather than asking again.
        clock.advance(29)
        with pytest.raises(RegistryError, match="no Google credentials found"):
            await tokens.token()
        assert silent.asked == 1
        clock.advance(2)  # 31 s after the failure: a recovered server would be noticed
        with pytest.raises(RegistryError, match="no Google credentials found"):
            await tokens.token()
        assert silent.asked == 2


# --- broken credentials -----------------------------------------------------------------------


@pytest.fixture
def debug_everything(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG for every logger, including google-auth's (which does not propagate)."""
    names = ("google", "google.auth", "google.oauth2", "urllib3", "httpx", "httpcore")
    caplog.set_level(logging.DEBUG)
    for name in names:
        caplog.set_level(logging.DEBUG, logger=name)
        logging.getLogger(name).addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(caplog.handler)


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records) + caplog.text


def exception_text(error: BaseException) -> str:
    import traceback

    return f"{error} {error!r} " + "".join(traceback.format_exception(error))


async def test_revoked_key_says_how_to_rotate_and_leaks_nothing(
    oauth: FakeOAuth, tmp_path: Path, settings_for: Any, debug_everything: Any
) -> None:
    key = oauth.service_account("builder@proj.iam.gserviceaccount.com")
    path = write_json(tmp_path / "key.json", key.info)
    async with token_source(settings_for(GOOGLE_APPLICATION_CREDENTIALS=str(path))) as tokens:
        good = await tokens.token()
        oauth.revoked.add(key.key_id)
        with pytest.raises(RegistryError) as caught:
            await tokens.refresh(good)
        assert good not in repr(tokens)
    error = caught.value
    assert error.code.wire == "DENIED" and error.status == 403
    assert "Invalid JWT Signature" in error.message
    assert "expired, revoked or disabled" in error.message
    assert (
        "gcloud iam service-accounts keys create KEY.json "
        "--iam-account=builder@proj.iam.gserviceaccount.com"
    ) in error.message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in error.message
    private_key_body = key.private_key.splitlines()[3]
    logged = everything_logged(debug_everything)
    assert "Making request" in logged  # google-auth's own debug records were captured
    for secret in (good, private_key_body):
        assert secret not in logged
        assert secret not in exception_text(error)


async def test_revoked_adc_login_says_to_log_in_again(
    oauth: FakeOAuth, tmp_path: Path, settings_for: Any
) -> None:
    user = oauth.authorized_user()
    write_json(adc_path(tmp_path), user)
    oauth.revoked.add(user["refresh_token"])
    async with token_source(settings_for(), oauth.token_uri) as tokens:
        with pytest.raises(RegistryError) as caught:
            await tokens.token()
    assert "gcloud auth application-default login" in caught.value.message
    assert user["refresh_token"] not in exception_text(caught.value)


async def test_invalid_inline_key_is_not_echoed(settings_for: Any) -> None:
    secret = '{"type": "service_account", "private_key": "-----BEGIN sekrit'
    async with token_source(settings_for(GAR_SERVICE_ACCOUNT_KEY=secret)) as tokens:
        with pytest.raises(RegistryError) as caught:
            await tokens.token()
    assert "GAR_SERVICE_ACCOUNT_KEY is not valid JSON" in caught.value.message
    assert "sekrit" not in exception_text(caught.value)


async def test_unreachable_token_endpoint_is_unavailable(
    oauth: FakeOAuth, settings_for: Any, refused_host: str
) -> None:
    key = oauth.service_account()
    info = key.info | {"token_uri": f"http://{refused_host}/token"}
    async with token_source(settings_for(GAR_SERVICE_ACCOUNT_KEY=json.dumps(info))) as tokens:
        with pytest.raises(RegistryError) as caught:
            await tokens.token()
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert caught.value.status == 503


# --- scopes -----------------------------------------------------------------------------------


async def test_read_only_asks_for_narrow_scope_and_wide_on_demand(
    oauth: FakeOAuth, settings_for: Any
) -> None:
    key = oauth.service_account()
    settings = settings_for(
        GAR_SERVICE_ACCOUNT_KEY=json.dumps(key.info), GAR_PROXY_GCP_READ_ONLY="true"
    )
    async with token_source(settings) as tokens:
        narrow = await tokens.token()
        wide = await tokens.token(wide=True)
        assert await tokens.token() == narrow  # each scope set keeps its own cached token
        assert await tokens.token(wide=True) == wide
    assert oauth.issued[narrow].scopes == (CLOUD_PLATFORM_READ_ONLY,)
    assert oauth.issued[wide].scopes == (CLOUD_PLATFORM,)
    assert oauth.token_requests == 2


async def test_wide_is_the_same_token_when_not_read_only(
    oauth: FakeOAuth, settings_for: Any
) -> None:
    key = oauth.service_account()
    async with token_source(settings_for(GAR_SERVICE_ACCOUNT_KEY=json.dumps(key.info))) as tokens:
        assert await tokens.token() == await tokens.token(wide=True)
    assert oauth.token_requests == 1
