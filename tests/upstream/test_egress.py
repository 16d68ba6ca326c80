"""Egress like the rest of the machine: HTTP(S)_PROXY and NO_PROXY, upstream.ca_file,
and ``User-Agent: gar-proxy/VERSION`` on upstream calls."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from proxy import USER_AGENT
from proxy.config import ConfigError
from testkit.fakes.forward_proxy import ForwardProxy
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer
from testkit.proxyharness import proxy_settings, run_proxy

MANIFEST = "/v2/proj/repo/app/manifests/v1"
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@contextlib.contextmanager
def served(**config: object) -> Iterator[FakeGAR]:
    fake = FakeGAR(auth="none")
    fake.put_image("us", "proj/repo/app", "v1", build_image([make_layer(seed=5)]))
    with fake.serve(**config):
        yield fake


def pull(tmp_path: Path, upstream: str, **keys: str) -> httpx.Response:
    with (
        run_proxy(proxy_settings(tmp_path, upstream, **keys)) as proxy,
        httpx.Client(trust_env=False) as client,  # the test's own calls skip the proxy
    ):
        return client.get(proxy.url + MANIFEST, headers=ACCEPT)


def test_http_proxy_carries_upstream_calls_with_our_user_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served() as fake, ForwardProxy() as egress:
        monkeypatch.setenv("HTTP_PROXY", egress.url)
        assert pull(tmp_path, fake.upstream).status_code == 200
        assert ("GET", f"{fake.url}/us{MANIFEST}") in egress.seen
        assert set(egress.agents) == {USER_AGENT}
        assert USER_AGENT.startswith("gar-proxy/") and USER_AGENT != "gar-proxy/"


def test_no_proxy_hosts_are_reached_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served() as fake, ForwardProxy() as egress:
        monkeypatch.setenv("HTTP_PROXY", egress.url)
        monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
        assert pull(tmp_path, fake.upstream).status_code == 200
        assert egress.seen == []


def test_a_private_ca_upstream_needs_ca_file_and_https_proxy_tunnels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with served(ssl_context=context) as fake, ForwardProxy() as egress:
        assert fake.url.startswith("https://")
        untrusted = pull(tmp_path / "a", fake.upstream)
        assert untrusted.status_code >= 500, untrusted.text
        monkeypatch.setenv("HTTPS_PROXY", egress.url)
        trusted = pull(tmp_path / "b", fake.upstream, upstream__ca_file=str(tmp_path / "ca.pem"))
        assert trusted.status_code == 200, trusted.text
        assert ("CONNECT", fake.url.removeprefix("https://")) in egress.seen


def test_registry_token_calls_go_through_the_proxy_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeGAR(access_tokens={"ya29.egress"}, registry_token_only=True)
    fake.put_image("us", "proj/repo/app", "v1", build_image([make_layer(seed=6)]))
    with fake.serve(), ForwardProxy() as egress:
        monkeypatch.setenv("HTTP_PROXY", egress.url)
        keys = {"upstream__username": "oauth2accesstoken", "upstream__password": "ya29.egress"}
        with (
            run_proxy(proxy_settings(tmp_path, fake.upstream, auth="basic", **keys)) as proxy,
            httpx.Client(trust_env=False) as client,
        ):
            assert client.get(proxy.url + MANIFEST, headers=ACCEPT).status_code == 200
    token_calls = [target for method, target in egress.seen if "/token" in target]
    assert token_calls, egress.seen


def test_a_missing_ca_file_stops_start_up_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"upstream.ca_file \(.*nope.pem\): no such file"):
        proxy_settings(
            tmp_path, "https://registry.example", upstream__ca_file=str(tmp_path / "nope.pem")
        )
