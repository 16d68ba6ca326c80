"""The lean blob-body path (``proxy/upstream/lean/``) against the fake GAR
on loopback, plain and over TLS, on asyncio's loop and uvloop: bytes as sent, in
batches, connections reused, every upstream fault an httpx error the proxy translates."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvloop

from proxy.upstream.lean import LEAN, LeanTransport, lean_ssl_context
from proxy.upstream.lean.wire import FIRST_BATCH
from proxy.upstream.lean.wire import SMALL_BATCH as BATCH  # bodies here are under BIG_BODY
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import make_layer
from testkit.proxyharness import proxy_settings, run_proxy

REPO = "proj/repo/app"
Runner = Callable[[Awaitable[Any]], Any]


@pytest.fixture(params=["plain", "tls"])
def fake(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[FakeGAR]:
    fake = FakeGAR(auth="none")
    config: dict[str, Any] = {}
    if request.param == "tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        config["ssl_context"] = context
    with fake.serve(**config):
        yield fake


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[return-value]


def client(ca: trustme.CA, read: float = 10.0) -> httpx.AsyncClient:
    def trusting() -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return context

    inner = httpx.AsyncHTTPTransport(verify=trusting())
    return httpx.AsyncClient(
        transport=LeanTransport(inner, lean_ssl_context(trusting())),
        timeout=httpx.Timeout(read, connect=5.0),
        follow_redirects=True,
    )


async def fetch(http: httpx.AsyncClient, url: str) -> tuple[int, bytes, list[int]]:
    """(status, body, the size of each piece the body came in)."""
    request = http.build_request("GET", url)
    request.extensions[LEAN] = True
    response = await http.send(request, stream=True)
    sizes: list[int] = []
    body = bytearray()
    try:
        async for piece in response.aiter_bytes():
            sizes.append(len(piece))
            body += piece
    finally:
        await response.aclose()
    return response.status_code, bytes(body), sizes


def blob_url(fake: FakeGAR, data: bytes) -> str:
    return f"{fake.url}/us/v2/{REPO}/blobs/{fake.put_blob('us', REPO, data)}"


def test_a_body_arrives_whole_in_batches_and_the_connection_is_reused(
    fake: FakeGAR, ca: trustme.CA, run: Runner
) -> None:
    big = make_layer(size=2 * BATCH + 12345, seed=1)
    small = make_layer(size=1000, seed=2)

    async def go() -> None:
        async with client(ca) as http:
            status, body, sizes = await fetch(http, blob_url(fake, big))
            assert (status, body) == (200, big)
            # Batches (one slow to fill comes early in parts), not 64-256 KiB reads.
            assert max(sizes) <= BATCH and len(sizes) < len(big) // (256 * 1024)
            assert sizes[0] <= FIRST_BATCH  # the first bytes go on without a whole batch
            transport = http._transport
            assert isinstance(transport, LeanTransport)
            assert transport.idle_count() == 1
            assert (await fetch(http, blob_url(fake, small)))[:2] == (200, small)
            assert transport.idle_count() == 1  # the same one

    run(go())
    assert fake.count("GET", "blob") == 2


@pytest.mark.parametrize("knob", ["redirect", "chunked", "gzip"])
def test_redirected_chunked_and_encoded_bodies_arrive_whole(
    knob: str, fake: FakeGAR, ca: trustme.CA, run: Runner
) -> None:
    data = make_layer(size=300_000, seed=3)
    url = blob_url(fake, data)
    knobs: dict[str, Any] = {knob: True}
    fake.add_fault(Fault(kind="blob", method="GET", path=r"^/us/", **knobs))

    async def go() -> tuple[int, bytes, list[int]]:
        async with client(ca) as http:
            return await fetch(http, url)

    status, body, _ = run(go())
    assert (status, body) == (200, data)


def test_an_error_answer_is_read_like_any_other(fake: FakeGAR, ca: trustme.CA, run: Runner) -> None:
    async def go() -> tuple[int, bytes, list[int]]:
        async with client(ca) as http:
            return await fetch(http, f"{fake.url}/us/v2/{REPO}/blobs/sha256:{'0' * 64}")

    status, body, _ = run(go())
    assert status == 404 and b"UNKNOWN" in body


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        ({"truncate_at": 300_000}, httpx.RemoteProtocolError),
        ({"truncate_at": 300_000, "reset": True}, httpx.TransportError),
        ({"reset": True}, httpx.TransportError),
        ({"slow_body": 3.0}, httpx.ReadTimeout),
    ],
    ids=["truncated", "reset-mid-body", "reset-before-headers", "stall"],
)
def test_upstream_faults_are_httpx_errors(
    knobs: dict[str, Any], error: type[Exception], fake: FakeGAR, ca: trustme.CA, run: Runner
) -> None:
    url = blob_url(fake, make_layer(size=BATCH + 1, seed=4))
    fake.add_fault(Fault(kind="blob", method="GET", **knobs))

    async def go() -> None:
        async with client(ca, read=0.5) as http:
            with pytest.raises(error):
                await fetch(http, url)
            assert not http._transport.idle_count()  # type: ignore[attr-defined]

    run(go())


def test_the_proxy_fills_over_tls_on_the_lean_path(tmp_path: Path, ca: trustme.CA) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    fake = FakeGAR(auth="none")
    data = make_layer(size=3 * BATCH + 777, seed=5)  # batches are reused: bytes must hold
    digest = fake.put_blob("us", REPO, data)
    with fake.serve(ssl_context=context):
        fake.add_fault(Fault(kind="blob", method="GET", path=r"^/us/", redirect=True))
        ca_file = str(tmp_path / "ca.pem")
        settings = proxy_settings(tmp_path, fake.upstream, upstream__ca_file=ca_file)
        with run_proxy(settings) as proxy, httpx.Client(trust_env=False) as http:
            assert isinstance(proxy.services.upstream.http._transport, LeanTransport)
            answer = http.get(f"{proxy.url}/v2/{REPO}/blobs/{digest}")
            assert answer.status_code == 200 and answer.content == data
            assert http.get(f"{proxy.url}/v2/{REPO}/blobs/{digest}").content == data
    assert fake.count("GET", "blob") == 2  # the redirect and its target, once
