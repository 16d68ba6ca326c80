"""Whose address a request is judged by: the connection's, unless it came through a
proxy listed in ``server.trusted_proxies``, whose ``X-Forwarded-For`` then names it.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise, so any
local process could once name itself anew on each try and dodge the failed-login
throttle (and pass for a remote client, or a remote client's neighbour). Now nothing
is believed by default; a front proxy (the ring's nginx) is listed, and then its
clients are judged apart (their own throttle buckets, loopback privileges only for
loopback clients) and it is not held to the per-client connection cap (it carries
many clients).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from testkit.proxyprocess import ProxyProcess
from tests.auth.accesskit import basic, write_access_files
from tests.conftest import FakeGarFactory, ProxyFactory

SPOOFED = [f"203.0.113.{i}" for i in range(1, 9)]


def _bad_logins(url: str, forwarded: Sequence[str | None]) -> list[int]:
    """One failed login per entry, each claiming that X-Forwarded-For (None: none)."""
    statuses = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for address in forwarded:
            headers = basic("alice", "wrong-pw")
            if address is not None:
                headers["X-Forwarded-For"] = address
            statuses.append(http.get("/v2/", headers=headers).status_code)
    return statuses


@pytest.fixture
def access_env(tmp_path: Path) -> dict[str, str]:
    keys = write_access_files(tmp_path)
    env = {f"GAR_PROXY_{key.upper().replace('__', '_')}": value for key, value in keys.items()}
    return {**env, "GAR_PROXY_ACCESS_FAILED_LOGIN_BURST": "3"}


@pytest.fixture
def upstream(fake_gar: FakeGarFactory) -> Iterator[str]:
    yield fake_gar(auth="none").upstream


def test_serve_believes_no_forwarded_address_by_default(
    tmp_path: Path, upstream: str, access_env: dict[str, str]
) -> None:
    """A local guesser naming a new address on each try is throttled as itself."""
    with ProxyProcess(tmp_path / "cache", upstream, env=access_env) as proxy:
        statuses = _bad_logins(proxy.url, SPOOFED)
    assert statuses[:3] == [401, 401, 401]
    assert set(statuses[3:]) == {429}, statuses


def test_serve_believes_a_listed_proxy(
    tmp_path: Path, upstream: str, access_env: dict[str, str]
) -> None:
    env = {**access_env, "GAR_PROXY_SERVER_TRUSTED_PROXIES": "127.0.0.1, ::1"}
    with ProxyProcess(tmp_path / "cache", upstream, env=env) as proxy:
        statuses = _bad_logins(proxy.url, ["203.0.113.1"] * 4 + ["203.0.113.2", None])
    # The forwarded client is throttled; another one, and the proxy itself, are not.
    assert statuses == [401, 401, 401, 429, 401, 401]


def test_a_listed_proxys_clients_are_judged_by_their_own_address(
    tmp_path: Path, upstream: str, proxy: ProxyFactory
) -> None:
    """Without client auth admin paths are for loopback clients: one that a local front
    proxy forwards from elsewhere is not loopback; the front proxy's own request is."""
    running = proxy(upstream, server__trusted_proxies="127.0.0.0/8")
    where = "/_gar-proxy/where/proj/repo"
    with httpx.Client(base_url=running.url, timeout=30) as http:
        remote = http.get(where, headers={"X-Forwarded-For": "198.51.100.7"})
        assert remote.status_code == 403, remote.text
        # A client's own X-Forwarded-For comes first; the proxy appends the address it saw.
        chained = http.get(where, headers={"X-Forwarded-For": "127.0.0.1, 198.51.100.7"})
        assert chained.status_code == 403, chained.text
        assert http.get(where).status_code == 200


def test_without_a_listed_proxy_a_forwarded_address_changes_nothing(
    tmp_path: Path, upstream: str, proxy: ProxyFactory
) -> None:
    running = proxy(upstream)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        answer = http.get("/_gar-proxy/where/proj/repo", headers={"X-Forwarded-For": "10.1.2.3"})
        assert answer.status_code == 200, answer.text


def _open(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    return [socket.create_connection((host, int(port)), timeout=10) for _ in range(count)]


def test_a_listed_proxy_is_not_held_to_the_per_client_cap(
    tmp_path: Path, upstream: str, proxy: ProxyFactory
) -> None:
    capped = proxy(upstream, server__max_connections_per_client="2")
    trusted = proxy(
        upstream,
        server__max_connections_per_client="2",
        server__trusted_proxies="127.0.0.1",
        cache__dir=str(tmp_path / "c2"),
    )
    held = _open(capped.url, 2) + _open(trusted.url, 2)
    try:
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{capped.url}/v2/").status_code == 503  # the cap, as before
            assert http.get(f"{trusted.url}/v2/").status_code == 200  # many clients in one
    finally:
        for sock in held:
            sock.close()
