"""Logins: remembered (by an HMAC, never the password), failed ones throttled per client
address (429 with Retry-After), each refusal one log line without a secret; and the
htpasswd, tokens and rules files re-read when they change, on the injected clock."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from proxy.auth.access import AccessPolicy, permitted
from proxy.auth.credentials import Authenticator
from proxy.auth.middleware import AccessControl
from proxy.clock import ManualClock
from proxy.config import load_settings
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.auth.accesskit import basic, write_access_files
from tests.conftest import FakeGarFactory


def _hashed(password: str) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4))


async def test_a_verified_login_is_remembered_for_its_ttl_by_an_hmac() -> None:
    clock = ManualClock()
    auth = Authenticator({"alice": _hashed("s3cret-pw")}, {}, clock, remember=60)
    header = basic("alice", "s3cret-pw")["Authorization"]
    assert auth.remembered(header) is None
    assert await auth.identify(header) == "alice"
    assert auth.remembered(header) == "alice"  # no check needed for it now
    # Keyed by an HMAC under the process's own key: neither the password nor a plain
    # hash of user and password (which a dictionary reverses) is kept.
    (key,) = auth._remembered
    plain = hashlib.sha256(b"alice\0s3cret-pw").digest()
    assert key != plain and b"s3cret-pw" not in key and len(key) == 32
    clock.advance(61)
    assert auth.remembered(header) is None
    assert await auth.identify(header, remembered_only=True) is None  # throttled: no check
    assert await auth.identify(header) == "alice"
    wrong = basic("alice", "wrong")["Authorization"]
    assert await auth.identify(wrong) is None and auth.remembered(wrong) is None
    assert await auth.identify(basic("nobody", "s3cret-pw")["Authorization"]) is None


async def test_a_reload_keeps_remembered_logins_only_of_unchanged_users() -> None:
    old = Authenticator({"alice": _hashed("a-pw-123"), "bob": _hashed("b-pw-123")}, {})
    alice, bob = basic("alice", "a-pw-123")["Authorization"], basic("bob", "b-pw-123")
    assert await old.identify(alice) == "alice"
    assert await old.identify(bob["Authorization"]) == "bob"
    new = Authenticator({"alice": old.users["alice"], "bob": _hashed("rotated-pw")}, {})
    new.adopt(old)
    assert new.remembered(alice) == "alice"
    assert new.remembered(bob["Authorization"]) is None
    assert await new.identify(bob["Authorization"]) is None  # the old password is gone


def _client(proxy: RunningProxy, address: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=proxy.url, transport=transport, timeout=30)


def test_failed_logins_are_throttled_per_address_and_logged_without_secrets(
    fake_gar: FakeGarFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_gar(auth="none")
    fake.put_image("us", "alpha/team/app", "v1", build_image([make_layer(seed=1)]))
    clock = ManualClock()
    keys = {**write_access_files(tmp_path), "access__failed_login_burst": "3",
            "access__failed_login_interval": "60s"}  # fmt: skip
    caplog.set_level(logging.INFO, logger="gar_proxy.access")
    with run_proxy(proxy_settings(tmp_path, fake.upstream, **keys), clock=clock) as proxy:
        manifest = "/v2/alpha/team/app/manifests/v1"
        with _client(proxy) as http, _client(proxy, "127.0.0.2") as other:
            assert http.get(manifest, headers=basic("alice")).status_code == 200  # remembered
            for _ in range(3):
                assert http.get(manifest, headers=basic("alice", "guess-pw")).status_code == 401
            limited = http.get(manifest, headers=basic("alice", "guess-pw"))
            assert limited.status_code == 429
            assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert limited.headers["retry-after"] == "60"
            # Not even a right password is checked from there, but a login verified
            # before is remembered, and another address is not concerned.
            assert http.get(manifest, headers=basic("builder")).status_code == 429
            assert http.get(manifest, headers=basic("alice")).status_code == 200
            assert other.get(manifest, headers=basic("builder")).status_code == 200
            clock.advance(60)  # one failure's worth has come back
            assert http.get(manifest, headers=basic("builder")).status_code == 200
    records = [r for r in caplog.records if r.name == "gar_proxy.access"]
    refusals = [r for r in records if r.getMessage().startswith("access denied")]
    assert len(refusals) == 3  # one per checked failure; the 429s are not checked
    assert all(getattr(r, "reason", None) == "bad credentials" for r in refusals)
    assert all(getattr(r, "identity", None) == "alice" for r in refusals)
    assert all(getattr(r, "repository", None) == "alpha/team/app" for r in refusals)
    throttled = [r for r in records if "too many failed logins" in r.getMessage()]
    assert len(throttled) == 1
    for record in records:
        assert "guess-pw" not in record.getMessage() and "alice-pw" not in str(record.__dict__)


def test_a_denial_is_logged_once_with_identity_repository_and_reason(
    fake_gar: FakeGarFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_gar(auth="none")
    mirrors = [{"host": "docker.io", "repository": "gamma/hub"}]
    keys: dict[str, Any] = {**write_access_files(tmp_path), "routing__mirrors": mirrors}
    caplog.set_level(logging.INFO, logger="gar_proxy.access")
    settings = proxy_settings(tmp_path, fake.upstream, **keys)
    with run_proxy(settings) as proxy, _client(proxy) as http:
        caplog.clear()
        got = http.get("/v2/alpha/team/app/manifests/v1?ns=docker.io", headers=basic("alice"))
        assert got.status_code == 403
        assert "gamma" not in got.text  # what it maps to is for the log, not the client
    (line,) = [r for r in caplog.records if r.getMessage().startswith("access denied")]
    fields: dict[str, Any] = line.__dict__
    assert fields["identity"] == "alice" and fields["repository"] == "gamma/hub/alpha/team/app"
    assert fields["reason"] == "may not pull gamma/hub/alpha/team/app"
    assert "alice-pw" not in str(fields)


# --- reloading the files -------------------------------------------------------------

RULES_TEAM = '[identities.alice]\npull = ["alpha/team"]\n'
RULES_ALL = '[identities.alice]\npull = ["alpha"]\n'


def _proxy_with_clock(
    fake_gar: FakeGarFactory, tmp_path: Path, clock: ManualClock
) -> tuple[Any, dict[str, str]]:
    fake = fake_gar(auth="none")
    for repo in ("alpha/team/app", "alpha/other/app"):
        fake.put_image("us", repo, "v1", build_image([make_layer({repo: b"x"})]))
    keys = {**write_access_files(tmp_path, RULES_TEAM), "access__reload_interval": "10s"}
    return run_proxy(proxy_settings(tmp_path, fake.upstream, **keys), clock=clock), keys


def test_changed_rules_apply_after_the_reload_interval_and_broken_ones_are_kept_out(
    fake_gar: FakeGarFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    running, keys = _proxy_with_clock(fake_gar, tmp_path, clock)
    rules = Path(keys["access__rules_file"])
    other = "/v2/alpha/other/app/manifests/v1"
    with running as proxy, _client(proxy) as http:
        assert http.get(other, headers=basic("alice")).status_code == 403
        rules.write_text(RULES_ALL)
        assert http.get(other, headers=basic("alice")).status_code == 403  # not looked yet
        clock.advance(10)
        assert http.get(other, headers=basic("alice")).status_code == 200
        caplog.set_level(logging.WARNING, logger="gar_proxy.access")
        rules.write_text('[identities.alice]\npull = "alpha"\n')  # a string: refused
        for _ in range(3):
            clock.advance(10)
            assert http.get(other, headers=basic("alice")).status_code == 200  # old rules
        broken = [r for r in caplog.records if "keeping the policy" in r.getMessage()]
        assert len(broken) == 1 and "expected a list" in broken[0].getMessage()
        rules.write_text(RULES_TEAM)
        clock.advance(10)
        assert http.get(other, headers=basic("alice")).status_code == 403
        assert proxy.app.state.access.reloads == 2


def test_changed_credentials_apply_after_a_reload(fake_gar: FakeGarFactory, tmp_path: Path) -> None:
    clock = ManualClock()
    running, keys = _proxy_with_clock(fake_gar, tmp_path, clock)
    htpasswd, tokens = Path(keys["access__htpasswd_file"]), Path(keys["access__tokens_file"])
    team = "/v2/alpha/team/app/manifests/v1"
    with running as proxy, _client(proxy) as http:
        assert http.get(team, headers=basic("alice")).status_code == 200  # remembered now
        assert http.get(team, headers={"Authorization": "Bearer ci-token-0123456789"}
                        ).status_code == 403  # fmt: skip
        # alice's password changes, carol arrives, the token is rotated.
        lines = [ln for ln in htpasswd.read_text().splitlines() if not ln.startswith("alice:")]
        lines.append(f"alice:{_hashed('new-alice-pw').decode()}")
        lines.append(f"carol:{_hashed('carol-pw').decode()}")
        htpasswd.write_text("\n".join(lines) + "\n")
        tokens.write_text("alice:rotated-token-0123456789\n")
        assert http.get(team, headers=basic("carol")).status_code == 401
        clock.advance(10)
        assert http.get(team, headers=basic("alice")).status_code == 401  # not remembered
        assert http.get(team, headers=basic("alice", "new-alice-pw")).status_code == 200
        assert http.get(team, headers=basic("carol")).status_code == 403  # no rule for her
        bearer = {"Authorization": "Bearer rotated-token-0123456789"}
        assert http.get(team, headers=bearer).status_code == 200
        old = {"Authorization": "Bearer ci-token-0123456789"}
        assert http.get(team, headers=old).status_code == 401


async def test_a_request_in_flight_keeps_the_policy_it_started_with(tmp_path: Path) -> None:
    """A reload mid-request changes nothing for it; the next request sees the new files."""
    keys = write_access_files(tmp_path, RULES_TEAM)
    overrides = {k.replace("__", "."): v for k, v in keys.items()}
    settings = load_settings(None, env={"HOME": str(tmp_path)}, overrides=overrides)
    policy = AccessPolicy(settings.access, ManualClock())
    answers: list[bool] = []
    rules = Path(keys["access__rules_file"])

    def rewrite() -> None:
        rules.write_text(RULES_ALL)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        before = permitted(scope, "pull", "alpha/other/app")
        rewrite()
        assert policy.reload()  # as the next request's look would
        answers.append(before == permitted(scope, "pull", "alpha/other/app"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    transport = httpx.ASGITransport(AccessControl(app, policy))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
        assert (await http.get("/v2/x", headers=basic("alice"))).status_code == 204
    assert answers == [True]
    assert policy.current.rules.allows("alice", "pull", "alpha/other/app")


def test_basic_credentials_in_a_header_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The claimed user of a failed Basic login is logged; the password never is, and a
    bearer token's value is not a user name."""
    from proxy.auth.middleware import _claimed_user

    value = "Basic " + base64.b64encode(b"mallory:hunter2-pw").decode()
    assert _claimed_user(value) == "mallory"
    assert _claimed_user("Bearer secret-token-value") == "(bearer credentials)"
    assert _claimed_user("Basic %%%") == "(undecodable basic credentials)"
