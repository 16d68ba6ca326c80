"""``gar-proxy healthcheck`` (the image's HEALTHCHECK and the Kubernetes exec probes)
finds the proxy where its settings say it listens, from the environment or the config
file, speaks TLS when the listener does, and fails when nothing answers there or the
path is not 200; the container test checks the same inside the image, TLS included."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from testkit.fakes.gar import FakeGAR
from testkit.proxyprocess import ProxyProcess, proxy_env
from testkit.realclients import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    work = tmp_path_factory.mktemp("healthcheck")
    with FakeGAR(auth="none").serve() as url, ProxyProcess(work / "cache", url) as running:
        yield running


def _check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "healthcheck", *args],
        capture_output=True, text=True, env=proxy_env(tmp_path / "cache", env), timeout=30,
        check=False, cwd=REPO,
    )  # fmt: skip


def test_healthy_at_the_port_in_gar_proxy_listen(proxy: ProxyProcess, tmp_path: Path) -> None:
    # A wildcard bind is checked on loopback, which it includes.
    for listen in (proxy.host, f"0.0.0.0:{proxy.port}"):
        for path in ((), ("/readyz",)):
            result = _check(
                tmp_path, *path, GAR_PROXY_SERVER_LISTEN=listen, GAR_PROXY_ACCESS_ANONYMOUS="true"
            )
            assert result.returncode == 0, result.stderr


def test_healthy_at_the_port_in_the_config_file(proxy: ProxyProcess, tmp_path: Path) -> None:
    config = tmp_path / "gar-proxy.toml"
    config.write_text(f'[server]\nlisten = "{proxy.host}"\n')
    result = _check(tmp_path, GAR_PROXY_CONFIG=str(config))
    assert result.returncode == 0, result.stderr


def test_unhealthy_where_nothing_listens_or_the_path_fails(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    closed = _check(tmp_path, GAR_PROXY_SERVER_LISTEN=f"127.0.0.1:{free_port()}")
    assert closed.returncode == 1
    assert "Connection refused" in closed.stderr
    missing = _check(tmp_path, "/no-such-probe", GAR_PROXY_SERVER_LISTEN=proxy.host)
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stderr


def test_speaks_tls_when_the_listener_does(tmp_path: Path) -> None:
    # A certificate for a DNS name, from a private CA: the check reaches 127.0.0.1 all
    # the same (see proxy/commands/healthcheck.py for why it does not verify).
    ca = trustme.CA()
    cert = ca.issue_cert("proxy.example")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    tls = {"GAR_PROXY_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
           "GAR_PROXY_TLS_KEY_FILE": str(tmp_path / "key.pem")}  # fmt: skip
    with (
        FakeGAR(auth="none").serve() as url,
        ProxyProcess(tmp_path / "cache", url, env=tls) as running,
    ):
        assert running.url.startswith("https://")
        for path in ("/healthz", "/readyz"):
            result = _check(tmp_path, path, GAR_PROXY_SERVER_LISTEN=running.host, **tls)
            assert result.returncode == 0, result.stderr
        # The same port without TLS settings: plain HTTP to a TLS listener fails.
        plain = _check(tmp_path, GAR_PROXY_SERVER_LISTEN=running.host)
    assert plain.returncode == 1, plain.stderr
