"""The upstream check is authenticated, and ``/readyz`` shows its detail to the right
clients.

- A wrong basic password is "rejected" with the upstream's reason: ``config check``
  exits 1 naming it, and ``/readyz`` keeps the proxy ready (its cache still serves) with
  ``upstream.state == "rejected"``. Before, ``config check`` printed ``ok credentials``
  and ``ok upstream ... (HTTP 401)``, and the first pull failed.
- A token realm that refuses the credentials is a rejection too, with its own words.
- With client auth on, ``/readyz``'s status is public (probes) and its detail (the
  upstream URL and state, the credential source) goes to admin identities and loopback
  clients only. A client elsewhere is played by a loopback request with
  ``X-Forwarded-For``, which uvicorn trusts from 127.0.0.1 as it would from a balancer
  on the same host.
"""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import httpx
import pytest

from testkit.proxyharness import RunningProxy
from testkit.proxyprocess import run_cli
from tests.conftest import FakeGarFactory, ProxyFactory

PASSWORD = "right-horse-battery"
WRONG = "wrong-staple-9d1"
ELSEWHERE = {"X-Forwarded-For": "192.0.2.7"}


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _htpasswd(path: Path, **users: str) -> Path:
    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}"
             for u, p in users.items()]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def upper(fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path) -> RunningProxy:
    """A team tier with client auth: node-b's password is PASSWORD."""
    (tmp_path / "upper").mkdir()
    htpasswd = _htpasswd(tmp_path / "upper" / "htpasswd", **{"node-b": PASSWORD})
    return proxy(fake_gar(auth="none").upstream, access__htpasswd_file=str(htpasswd))


def _config_check(tmp_path: Path, upstream: str, password: str) -> tuple[int, str]:
    env = {"GAR_PROXY_UPSTREAM_USERNAME": "node-b", "GAR_PROXY_UPSTREAM_PASSWORD": password}
    result = run_cli(tmp_path / "lower", upstream, "config", "check", auth="basic", env=env)
    return result.returncode, result.stdout + result.stderr


def test_config_check_with_a_wrong_password_exits_1_naming_the_rejection(
    upper: RunningProxy, tmp_path: Path
) -> None:
    code, out = _config_check(tmp_path, upper.url, WRONG)
    assert code == 1, out
    lines = out.splitlines()
    assert f"FAIL  upstream: upstream {upper.url}/v2/ rejected gar-proxy's " \
        "credentials (HTTP 401): bad credentials" in lines  # fmt: skip
    assert "FAIL  credentials: basic auth as node-b (rejected by the upstream)" in lines
    assert WRONG not in out
    code, out = _config_check(tmp_path, upper.url, PASSWORD)
    assert code == 0, out
    assert f"ok    upstream: upstream {upper.url}/v2/ answered as a registry (HTTP 200)" in out


def test_readyz_reports_a_rejected_password_and_stays_ready(
    upper: RunningProxy, proxy: ProxyFactory
) -> None:
    lower = proxy(
        upper.url, upstream__auth="basic", upstream__username="node-b",
        upstream__password=WRONG, upstream__tier="true",
    )  # fmt: skip
    answer = httpx.get(lower.url + "/readyz")
    assert answer.status_code == 200, answer.text
    upstream = answer.json()["upstream"]
    assert (upstream["state"], upstream["status"], upstream["reason"]) == (
        "rejected", 401, "bad credentials"
    )  # fmt: skip
    assert WRONG not in answer.text
    metrics = lower.services.metrics
    assert metrics.sample("garproxy_upstream_up") == 0
    assert metrics.sample("garproxy_ready") == 1
    assert metrics.sample("garproxy_credential_failures_total", {"kind": "upstream_401"}) >= 1


def test_a_token_realm_refusing_the_credentials_is_a_rejection_in_its_words(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    # GAR's shape: /v2/ asks for a Bearer token from its realm, which wants
    # oauth2accesstoken and a Google token; a plain user and password are refused there.
    fake = fake_gar(auth="gcp")
    running = proxy(
        fake.upstream, upstream__auth="basic", upstream__username="someone",
        upstream__password=WRONG,
    )  # fmt: skip
    upstream = httpx.get(running.url + "/readyz").json()["upstream"]
    assert upstream["state"] == "rejected"
    # GAR's words at its token endpoint (docs/GAR.md A5), passed on as they are.
    assert upstream["reason"] == (
        "the upstream token service rejected gar-proxy's credentials (HTTP 401) for a login: "
        "authentication failed"
    )


@pytest.fixture
def guarded(fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path) -> RunningProxy:
    htpasswd = _htpasswd(tmp_path / "htpasswd", alice="alice-pw", bob="bob-pw")
    rules = tmp_path / "rules.toml"
    rules.write_text('[identities.alice]\nadmin = true\n[identities.bob]\npull = ["proj"]\n')
    return proxy(
        # A password in the URL: the admin's detail shows the URL with it redacted.
        fake_gar(auth="none").upstream.replace("http://", "http://u:pw-in-url@"),
        access__htpasswd_file=str(htpasswd), access__rules_file=str(rules),
        # "Elsewhere" is a client a front proxy on loopback forwards (X-Forwarded-For),
        # which is believed only from a listed proxy.
        server__trusted_proxies="127.0.0.1",
    )  # fmt: skip


@pytest.mark.parametrize(
    "who",
    [
        pytest.param({}, id="anonymous"),
        pytest.param(_basic("bob", "bob-pw"), id="not-admin"),
        pytest.param(_basic("alice", "wrong"), id="bad-password"),
    ],
)
def test_readyz_detail_is_hidden_from_others_elsewhere(
    guarded: RunningProxy, who: dict[str, str]
) -> None:
    answer = httpx.get(guarded.url + "/readyz", headers={**ELSEWHERE, **who})
    assert answer.status_code == 200  # the status stays public: probes read it
    assert answer.json() == {"ready": True, "detail": "shown to admin identities and loopback only"}
    assert "127.0.0.1" not in answer.text


@pytest.mark.parametrize(
    "who",
    [
        pytest.param({**ELSEWHERE, **_basic("alice", "alice-pw")}, id="admin-elsewhere"),
        pytest.param({}, id="loopback"),
    ],
)
def test_readyz_detail_is_shown_to_admins_and_loopback(
    guarded: RunningProxy, who: dict[str, str]
) -> None:
    answer = httpx.get(guarded.url + "/readyz", headers=who)
    assert answer.status_code == 200
    body = answer.json()
    assert body["upstream"]["state"] == "up" and body["checks"]["credentials"]["source"] == "none"
    assert body["upstream"]["url"].startswith("http://<redacted>@127.0.0.1:")
    assert "pw-in-url" not in answer.text


def test_without_client_auth_readyz_detail_is_for_anyone(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    running = proxy(fake_gar(auth="none").upstream)
    body = httpx.get(running.url + "/readyz", headers=ELSEWHERE).json()
    assert body["upstream"]["state"] == "up"
