"""The image's healthcheck script (deploy/image/healthcheck.py) finds the proxy where its
settings say it listens, from the environment or the config file, and fails when
nothing answers there; the container test checks the same inside the image."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fakes.gar import FakeGAR
from testkit.proxyprocess import ProxyProcess, proxy_env
from testkit.realclients import free_port

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "deploy" / "image" / "healthcheck.py"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    work = tmp_path_factory.mktemp("healthcheck")
    with FakeGAR(auth="none").serve() as url, ProxyProcess(work / "cache", url) as running:
        yield running


def _check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = proxy_env(tmp_path / "cache", {"PYTHONPATH": str(REPO), **env})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True, text=True, env=full_env, timeout=30, check=False,
    )  # fmt: skip


def test_healthy_at_the_port_in_gar_proxy_listen(proxy: ProxyProcess, tmp_path: Path) -> None:
    # A wildcard bind is checked on loopback, which it includes.
    for listen in (proxy.host, f"0.0.0.0:{proxy.port}"):
        result = _check(tmp_path, GAR_PROXY_LISTEN=listen, GAR_PROXY_ACCESS_ANONYMOUS="true")
        assert result.returncode == 0, result.stderr


def test_healthy_at_the_port_in_the_config_file(proxy: ProxyProcess, tmp_path: Path) -> None:
    config = tmp_path / "gar-proxy.toml"
    config.write_text(f'[server]\nlisten = "{proxy.host}"\n')
    result = _check(tmp_path, GAR_PROXY_CONFIG=str(config))
    assert result.returncode == 0, result.stderr


def test_unhealthy_where_nothing_listens_or_the_path_fails(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    closed = _check(tmp_path, GAR_PROXY_LISTEN=f"127.0.0.1:{free_port()}")
    assert closed.returncode == 1
    assert "Connection refused" in closed.stderr
    missing = _check(tmp_path, "/no-such-probe", GAR_PROXY_LISTEN=proxy.host)
    assert missing.returncode == 1
    assert "404" in missing.stderr
