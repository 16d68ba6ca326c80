"""Failed logins sent all at once: the throttle counts a check while it runs.

The throttle used to count a failure when its check ended, so every request that
arrived while the first checks ran found the bucket as it was: a guesser sending its
tries together got as many checks as it had connections (each a bcrypt check, ~65 ms
of CPU for an unknown user's decoy) where one try was left, every time one came
back. Now a check holds one of the address's tries while it runs; a request finding
them all held waits for those checks, then is checked (they succeeded) or refused.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from proxy.auth.middleware import AccessControl, AccessPolicy
from proxy.config import load_settings
from testkit.proxyharness import proxy_settings, run_proxy
from tests.auth.accesskit import basic, write_access_files
from tests.conftest import FakeGarFactory

TRIES = 24
BURST = 3


async def _all_at_once(url: str, headers: dict[str, str]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        answers = await asyncio.gather(*(http.get("/v2/", headers=headers) for _ in range(TRIES)))
    return [answer.status_code for answer in answers]


def test_tries_sent_together_get_no_more_checks_than_the_burst(
    fake_gar: FakeGarFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = {**write_access_files(tmp_path), "access__failed_login_burst": str(BURST),
            "access__failed_login_interval": "1h"}  # fmt: skip
    caplog.set_level(logging.INFO, logger="gar_proxy.access")
    with run_proxy(proxy_settings(tmp_path, fake_gar(auth="none").upstream, **keys)) as proxy:
        # Logins that succeed keep no try: alice, many times over, all at once.
        assert asyncio.run(_all_at_once(proxy.url, basic("alice"))) == [200] * TRIES
        statuses = asyncio.run(_all_at_once(proxy.url, basic("nobody", "guess-pw")))
        # Remembered logins still pass from the throttled address.
        assert asyncio.run(_all_at_once(proxy.url, basic("alice"))) == [200] * TRIES
    assert statuses.count(401) == BURST and statuses.count(429) == TRIES - BURST, statuses
    checked = [r for r in caplog.records if r.getMessage().startswith("access denied")]
    assert len(checked) == BURST
    throttled = [r for r in caplog.records if "too many failed logins" in r.getMessage()]
    assert len(throttled) == 1


def _raw(url: str, head: bytes) -> bytes:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_two_authorization_headers_are_refused_not_guessed(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> None:
    """Which of two credentials is meant? The middleware read the last, a front proxy
    or a log may read the first: the request is refused, whichever order, as two
    ``Host`` headers are, before either is checked."""
    keys = write_access_files(tmp_path)
    alice, root = basic("alice")["Authorization"], basic("root")["Authorization"]
    with run_proxy(proxy_settings(tmp_path, fake_gar(auth="none").upstream, **keys)) as proxy:
        for first, second in ((alice, root), (root, alice), (alice, alice)):
            both = f"Authorization: {first}\r\nAuthorization: {second}\r\n".encode()
            answer = _raw(proxy.url, b"GET /v2/alpha/secret/app/tags/list HTTP/1.1\r\n"
                          b"Host: a\r\n" + both)  # fmt: skip
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
            assert b"one Authorization header" in answer


async def test_one_ipv6_host_is_one_client_to_the_throttle(tmp_path: Path) -> None:
    """A host commonly holds a whole IPv6 /64: naming a new address of it on each try
    used to start a new bucket each time. IPv4 addresses stay apart."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    keys = {**write_access_files(tmp_path), "access__failed_login_burst": "2"}
    overrides = {key.replace("__", "."): value for key, value in keys.items()}
    settings = load_settings(None, env={"HOME": str(tmp_path)}, overrides=overrides)
    guarded = AccessControl(app, AccessPolicy(settings.access))

    async def login(address: str) -> int:
        transport = httpx.ASGITransport(guarded, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
            answer = await http.get("/v2/", headers=basic("alice", "guess-pw"))
            return answer.status_code

    six = [await login(f"2001:db8:7:7::{n:x}") for n in range(1, 5)]
    assert six == [401, 401, 429, 429]
    assert await login("2001:db8:7:8::1") == 401  # another /64, another host
    four = [await login(f"198.51.100.{n}") for n in range(1, 5)]
    assert four == [401] * 4
