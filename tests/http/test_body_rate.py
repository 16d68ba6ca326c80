"""A request body must average ``server.body_min_rate``: a trickle ends, a slow real push does not.

``server.body_timeout`` is re-armed by every body byte, so a client sending one byte
just inside it held its connection and its upload session for ever. With a minimum
average rate after ``server.body_rate_grace`` of credit (Apache's ``MinRate``), such a
body is ended by first byte + grace + bytes / rate. Both clients here write raw HTTP on
a socket at their own pace (the client under test is slow: that is its pace); nothing
compares elapsed time to a bound: the trickle awaits the proxy's close with a generous
timeout, and the proxy's own tally says why it ended the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from proxy.http.guarded import TOO_SLOW
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
KIB = 1024
CLOSE_WAIT = 30.0  # seconds a trickle may go on before the test gives up on the proxy


def _seeded(fake_gar: FakeGarFactory) -> FakeGAR:
    fake = fake_gar(auth="none")
    fake.put_image("us", REPO, "v1", build_image([make_layer(seed=3)]))  # the repository
    return fake


def _session(running: RunningProxy) -> str:
    started = httpx.post(f"{running.url}/v2/{REPO}/blobs/uploads/", timeout=30)
    assert started.status_code == 202, started.text
    return started.headers["location"]


def _guard(running: RunningProxy) -> Any:
    return running.server.config.http_protocol_class.guard  # type: ignore[attr-defined]


async def _patch_at(
    port: int, where: str, data: bytes, piece: int, pause: float
) -> tuple[bytes, int]:
    """PATCH ``data`` ``piece`` bytes at a time, ``pause`` s apart, until it is all sent
    or the proxy answers or closes; the answer's head (b"" if it closed without one)
    and the bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def head() -> bytes:
        try:
            return await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""

    writer.write(
        f"PATCH {where} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(head())
    sent = 0
    try:
        while sent < len(data) and not answer.done():
            writer.write(data[sent : sent + piece])
            sent += len(data[sent : sent + piece])
            await writer.drain()
            await asyncio.wait({answer}, timeout=pause)
        return await asyncio.wait_for(answer, CLOSE_WAIT), sent
    except ConnectionError:
        return await asyncio.wait_for(answer, CLOSE_WAIT), sent
    finally:
        answer.cancel()
        writer.close()


def test_a_body_trickled_one_byte_at_a_time_is_ended(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = _seeded(fake_gar)
    running = proxy(fake.upstream, server__body_min_rate="1000",
                    server__body_rate_grace="0.5s", server__body_timeout="60s")  # fmt: skip
    where = _session(running)
    data = bytes(100_000)
    # 10 bytes a second, each byte well inside body_timeout: only the rate can end it.
    trickle = _patch_at(running.server.port, where, data, 1, 0.1)
    answer, sent = asyncio.run(asyncio.wait_for(trickle, CLOSE_WAIT))  # ended, or fails here
    assert sent < len(data)  # ended long before the body was all sent
    assert answer == b"", answer[:200]  # closed, no answer: nobody reads a half body
    guard = _guard(running)
    assert guard.ended[TOO_SLOW] == 1 and guard.ended["body timeout"] == 0, guard.ended
    # The session is still the client's: a real client goes on from what arrived.
    assert httpx.get(running.url + where, timeout=30).status_code == 204


def test_a_slow_but_real_push_is_not_cut(fake_gar: FakeGarFactory, proxy: ProxyFactory) -> None:
    fake = _seeded(fake_gar)
    running = proxy(fake.upstream, server__body_min_rate="16KiB", server__body_rate_grace="1s")
    where = _session(running)
    data = bytes(range(256)) * (192 * KIB // 256)  # 192 KiB at 64 KiB/s: three seconds
    push = _patch_at(running.server.port, where, data, 8 * KIB, 0.125)
    answer, sent = asyncio.run(asyncio.wait_for(push, CLOSE_WAIT))
    assert sent == len(data) and answer.startswith(b"HTTP/1.1 202"), answer[:200]
    digest = Digest.of(data)
    done = httpx.put(f"{running.url}{where}", params={"digest": str(digest)}, timeout=30)
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, str(digest)) == data
    assert _guard(running).ended[TOO_SLOW] == 0
