"""Upstream connections as the original design sets them: idle ones kept 90 s
(``transport.keepalive_expiry``), TCP keep-alive on every one (httpx's pool and the lean
path's), and a connect that never completes ends at ``transport.connect_timeout``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.config import Settings, load_settings
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.services.container import make_upstream
from proxy.upstream import sockets
from proxy.upstream.lean import LeanTransport
from testkit.servers import black_hole, serve_in_thread

REPO = Repository("proj/repo/img")


def _settings(tmp_path: Path, url: str, **keys: str) -> Settings:
    overrides = {"upstream.url": url, "upstream.auth": "none", **keys}
    return load_settings(None, env={"HOME": str(tmp_path)}, overrides=overrides)


@pytest.fixture
def registry() -> Iterator[str]:
    async def answer(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", answer)])
    with serve_in_thread(app) as url:
        yield url


def _keepalive(sock: socket.socket) -> tuple[int, int, int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


async def test_upstream_sockets_have_tcp_keepalive(registry: str, tmp_path: Path) -> None:
    upstream = make_upstream(_settings(tmp_path, registry), None)
    try:
        response = await upstream.send("GET", REPO, "/manifests/1", stream=True)
        sock = response.extensions["network_stream"].get_extra_info("socket")
        assert _keepalive(sock) == (1, sockets.IDLE, sockets.INTERVAL, sockets.COUNT)
        await response.aclose()
    finally:
        await upstream.aclose()


@pytest.mark.parametrize(
    ("keys", "seconds"), [({}, 90.0), ({"transport.keepalive_expiry": "5m"}, 300.0)]
)
async def test_idle_connections_are_kept_as_configured(
    tmp_path: Path, keys: dict[str, str], seconds: float
) -> None:
    """90 s by default (httpx's own is 5 s: bursty CI load paid a TLS handshake to GAR
    after every pause), for httpx's pool and the lean path's alike."""
    settings = _settings(tmp_path, "http://127.0.0.1:9", **keys)
    assert settings.transport.keepalive_expiry == seconds
    upstream = make_upstream(settings, None)
    try:
        transport = upstream.http._transport
        assert isinstance(transport, LeanTransport)
        assert transport._expiry == seconds
        inner = transport._inner
        assert isinstance(inner, httpx.AsyncHTTPTransport)
        assert inner._pool._keepalive_expiry == seconds  # httpcore's pool
    finally:
        await upstream.aclose()


# A black-holed upstream (SYNs dropped, as by a firewall) answers nothing: only the
# connect timeout ends the wait. An hour's read timeout shows it is not the read one;
# should neither fire, the test's own timeout ends it.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("lean_body", [False, True], ids=["httpx", "lean"])
async def test_a_connect_that_never_completes_is_upstream_timeout(
    tmp_path: Path, lean_body: bool
) -> None:
    with black_hole() as url:
        keys = {
            "transport.connect_timeout": "0.5s",
            "transport.timeout": "1h",
            "transport.retries": "0",
        }
        upstream = make_upstream(_settings(tmp_path, url, **keys), None)
        try:
            with pytest.raises(RegistryError) as raised:
                await upstream.send("GET", REPO, f"/blobs/sha256:{'0' * 64}", lean_body=lean_body)
        finally:
            await upstream.aclose()
    assert raised.value.code is ErrorCode.UPSTREAM_TIMEOUT
    assert "ConnectTimeout after 0.5 s" in raised.value.message
