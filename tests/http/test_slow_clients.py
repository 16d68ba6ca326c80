"""Slow and silent clients end; a real client pulls meanwhile; descriptors come back.

A flood of 2,000 connections (``SLOW_CLIENTS=5000`` for more) is held open against the
proxy (``gar-proxy serve`` in its own process, plain and TLS) from other loopback
addresses, each of a kind the proxy once held for ever: silent, trickling its headers
a byte at a time, a body stopped halfway, idle after an answer, and over TLS a
handshake that never starts or stops half way. Every connection the proxy ends is
opened again until skopeo, from 127.0.0.1, has pulled an image through it. Then the
flood stops reopening and every connection must be ended by the proxy (its timeouts
are 2 s here, 5 s for a TLS handshake), its open descriptors (``/proc/PID/fd``) must
come back to what they were before, and its log must say so in a few lines, not one
per connection. A client that stops reading an answer is ended too.

The caps (``server.max_connections``, ``server.max_connections_per_client``) are tested
apart, with long timeouts, so that which connection is refused is certain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from testkit.images import build_image, make_layer
from testkit.proxyprocess import ProxyProcess
from testkit.realclients import Skopeo, TlsFiles
from tests.conftest import FakeGarFactory, ProxyFactory

COUNT = int(os.environ.get("SLOW_CLIENTS", "2000"))
PER_ADDRESS = 500  # under server.max_connections_per_client
ADDRESSES = [f"127.0.0.{2 + i}" for i in range((COUNT + PER_ADDRESS - 1) // PER_ADDRESS)]
# The proxy's timeouts here; a bigger TLS flood needs longer ones for the proxy to hold
# it all at once (each handshake costs both ends CPU): SLOW_CLIENTS_TIMEOUT=6s.
TIMEOUT = os.environ.get("SLOW_CLIENTS_TIMEOUT", "2s")
HANDSHAKE_TIMEOUT = os.environ.get("SLOW_CLIENTS_HANDSHAKE_TIMEOUT", "5s")
ENDED_DEADLINE = 60.0  # seconds for every flood connection to be ended by the proxy
REPO = "proj/repo/app"


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    """This process holds the flood's client ends; the proxy inherits the limit too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * COUNT + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"open-files hard limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _client_hello() -> bytes:
    """The first flight of a real TLS client, to send half of."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@dataclass
class Flood:
    """``COUNT`` connections of mixed kinds, reopened while ``holding``."""

    port: int
    count: int
    kinds: list[Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]]
    holding: bool = True
    open: int = 0
    ended: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)  # most of them are open

    async def connection(self, index: int) -> None:
        kind = self.kinds[index % len(self.kinds)]
        address = ADDRESSES[index // PER_ADDRESS]
        while True:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(address, 0)
            )
            self.open += 1
            if self.open >= self.count * 0.95:
                self.full.set()
            try:
                await kind(reader, writer)
                while await reader.read(65536):  # until the proxy ends it
                    pass
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                self.open -= 1
                self.ended += 1
                writer.close()
            if not self.holding:
                return


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in b"GET /v2/proj/repo/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nX-Slow: 1":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.25)  # the client under test is slow; this is its pace


async def _stalled_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = b"PUT /v2/proj/repo/app/manifests/stalled HTTP/1.1\r\nHost: x\r\n"
    writer.write(head + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    await writer.drain()


async def _idle_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"}")  # the answer's JSON body; then nothing


def _over_tls(context: ssl.SSLContext, then: Callable[..., Awaitable[None]]
              ) -> Callable[..., Awaitable[None]]:  # fmt: skip
    """A whole handshake, then ``then`` over TLS."""

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await writer.start_tls(context, server_hostname="127.0.0.1")
        await then(reader, writer)

    return send


def _half_hello(hello: bytes) -> Callable[..., Awaitable[None]]:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(hello[: len(hello) // 2])
        await writer.drain()

    return send


async def _flood_while_pulling(
    flood: Flood, pull: Callable[[], None], pid: int, baseline: int
) -> int:
    """Hold the flood until the proxy holds most of it, pull, stop reopening; the peak
    of the proxy's descriptors."""
    tasks = [asyncio.create_task(flood.connection(i)) for i in range(flood.count)]
    await asyncio.wait_for(flood.full.wait(), 60)
    held = baseline + flood.count * 0.9
    peak = 0

    async def sample() -> None:  # the proxy accepts (and shakes hands) at its own pace
        nonlocal peak
        while flood.holding:
            peak = max(peak, _fds(pid))
            if peak >= held:
                reached.set()
            await asyncio.sleep(0.05)

    reached = asyncio.Event()
    sampling = asyncio.create_task(sample())
    with contextlib.suppress(TimeoutError):  # then the peak assertion says how far it got
        await asyncio.wait_for(reached.wait(), 20)
    await asyncio.to_thread(pull)
    flood.holding = False
    await sampling
    await asyncio.wait_for(asyncio.gather(*tasks), ENDED_DEADLINE)
    return peak


def _proxy(tmp_path: Path, upstream: str, tls: TlsFiles | None) -> ProxyProcess:
    env = {
        "GAR_PROXY_SERVER_HEADER_TIMEOUT": TIMEOUT,
        "GAR_PROXY_SERVER_IDLE_TIMEOUT": TIMEOUT,
        "GAR_PROXY_SERVER_BODY_TIMEOUT": TIMEOUT,
        "GAR_PROXY_SERVER_TLS_HANDSHAKE_TIMEOUT": HANDSHAKE_TIMEOUT,
        "GAR_PROXY_SERVER_MAX_CONNECTIONS_PER_CLIENT": str(PER_ADDRESS),
        "GAR_PROXY_SERVER_MAX_CONNECTIONS": str(COUNT + 200),
    }
    if tls is not None:
        env |= {"GAR_PROXY_TLS_CERT_FILE": str(tls.cert), "GAR_PROXY_TLS_KEY_FILE": str(tls.key)}
    return ProxyProcess(tmp_path / "cache", upstream, env=env)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_slow_and_silent_connections_end_while_a_real_client_pulls(
    fake_gar: FakeGarFactory, skopeo_runner: Skopeo, tmp_path: Path, scheme: str
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer(size=300_000, seed=4)])
    fake.put_image("us", REPO, "v1", image)
    tls = TlsFiles.issue(tmp_path / "tls") if scheme == "https" else None
    with _proxy(tmp_path, fake.upstream, tls) as proxy:
        verify: ssl.SSLContext | bool = tls.client_context() if tls else False
        with httpx.Client(base_url=proxy.url, verify=verify, timeout=30) as http:
            assert http.get(f"/v2/{REPO}/manifests/v1").status_code == 200  # warm the cache
            for blob in image.blobs:
                assert http.get(f"/v2/{REPO}/blobs/{blob.digest}").content == blob.data
        pulls = iter(("before", "during"))

        def pull() -> None:
            target = tmp_path / f"pulled-{next(pulls)}"
            skopeo_runner("copy", f"docker://{proxy.host}/{REPO}:v1", f"dir:{target}")
            assert json.loads((target / "manifest.json").read_bytes()) == image.manifest_json()

        pull()  # skopeo's own first run, so the baseline has seen one real client
        baseline = _fds(proxy.pid)
        kinds: list[Callable[..., Awaitable[None]]]
        if tls is None:
            kinds = [_silent, _trickle, _stalled_body, _idle_after_answer]
        else:
            # Whole handshakes cost both ends CPU: one in ten, so that on a busy machine
            # they finish within the handshake timeout and reach the HTTP timeouts.
            trusted = tls.client_context()
            kinds = [_silent, _half_hello(_client_hello())] * 9
            kinds += [_over_tls(trusted, _silent), _over_tls(trusted, _trickle)]
        flood = Flood(proxy.port, COUNT, kinds)
        peak = asyncio.run(_flood_while_pulling(flood, pull, proxy.pid, baseline))
        assert (tmp_path / "pulled-during" / "manifest.json").exists()
        assert peak - baseline >= COUNT * 0.9, (peak, baseline)  # the proxy held the flood
        deadline = time.monotonic() + 30
        while _fds(proxy.pid) > baseline and time.monotonic() < deadline:
            time.sleep(0.1)  # waiting for an observable state, with a deadline
        # Back to the start, or below (an idle upstream connection may have closed).
        assert _fds(proxy.pid) <= baseline, (_fds(proxy.pid), baseline)
        proxy.stop()
        lines = [ln for ln in proxy.log_text().splitlines() if "connections refused" in ln]
        assert 1 <= len(lines) <= 10, lines  # a summary per 10 s, not one per connection
        ended = sum(json.loads(line)["connections_ended"] for line in lines)
        assert ended >= flood.ended >= COUNT, (ended, flood.ended)  # every one, by the proxy
        print(f"{scheme}: {COUNT} connections, {ended} ended by the proxy, "
              f"descriptors {baseline} -> peak {peak} -> {baseline}")  # fmt: skip
        text = "\n".join(lines)
        for reason in (
            ("idle", "header timeout", "body timeout")
            if tls is None
            else ("TLS handshake timeout", "idle", "header timeout")
        ):
            assert reason in text, (reason, text)


async def _held(port: int, address: str, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        writers.append(writer)
    return writers


async def _refused(port: int, address: str) -> bytes:
    """What a connection beyond a cap reads: the proxy answers before it asks."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def _answered(port: int, address: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def _caps(port: int) -> None:
    first = await _held(port, "127.0.0.2", 3)
    refused = await _refused(port, "127.0.0.2")  # a fourth from the same address
    assert refused.startswith(b"HTTP/1.1 503 "), refused[:100]
    assert b"UNAVAILABLE" in refused and b"per-client cap" in refused
    assert (await _answered(port, "127.0.0.3")).startswith(b"HTTP/1.1 200 ")  # another: fine
    first.pop().close()
    await asyncio.sleep(0)  # let the close leave this process; the proxy sees EOF
    for _ in range(100):  # the proxy releases the slot when it sees the close
        answer = await _answered(port, "127.0.0.2")
        if answer.startswith(b"HTTP/1.1 200 "):
            break
        await asyncio.sleep(0.05)  # polling an observable state, with a bound
    else:
        raise AssertionError("a closed connection's slot was not given back")
    others = await _held(port, "127.0.0.4", 3)  # 2 + 3 = the total cap of 5
    total = await _refused(port, "127.0.0.5")
    assert total.startswith(b"HTTP/1.1 503 ") and b"total cap" in total
    for writer in first + others:
        writer.close()


def test_connections_beyond_the_caps_are_answered_503(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    running = proxy(
        fake.upstream,
        server__max_connections="5",
        server__max_connections_per_client="3",
        server__idle_timeout="60s",
    )
    asyncio.run(_caps(running.server.port))
    ended = running.server.config.http_protocol_class.guard.ended  # type: ignore[attr-defined]
    assert ended["refused: per-client cap"] >= 1 and ended["refused: total cap"] == 1


def _stop_reading_a_blob(url: str, path: str, tls: TlsFiles | None) -> socket.socket:
    """A client that asks for a blob, reads the first bytes of the answer, then stops."""
    host, port = url.split("://")[1].split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    raw.connect((host, int(port)))
    sock = tls.client_context().wrap_socket(raw, server_hostname=host) if tls else raw
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    return sock


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_client_that_stops_reading_an_answer_is_ended(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path, scheme: str
) -> None:
    """Zero-copy file sends (plain) and uvicorn's writes (TLS) alike."""
    fake = fake_gar(auth="none")
    image = build_image([make_layer(size=16 * 1024 * 1024, seed=7)])
    fake.put_image("us", REPO, "v1", image)
    tls = TlsFiles.issue(tmp_path / "tls") if scheme == "https" else None
    keys = {"tls__cert_file": str(tls.cert), "tls__key_file": str(tls.key)} if tls else {}
    running = proxy(fake.upstream, server__send_timeout="1s", **keys)
    path = f"/v2/{REPO}/blobs/{image.layers[0].digest}"
    verify: ssl.SSLContext | bool = tls.client_context() if tls else False
    assert httpx.get(running.url + path, verify=verify).content == image.layers[0].data  # cached
    guard = running.server.config.http_protocol_class.guard  # type: ignore[attr-defined]
    sock = _stop_reading_a_blob(running.url, path, tls)
    deadline = time.monotonic() + 30
    while guard.total and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for an observable state, with a deadline
    assert guard.total == 0 and guard.ended["send timeout"] == 1, (guard.total, guard.ended)
    received = 0
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := sock.recv(1 << 20):  # what was in flight, then the end
            received += len(chunk)
    sock.close()
    assert received < len(image.layers[0].data)
