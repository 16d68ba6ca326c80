"""Blob bodies sent file -> socket by the kernel (``proxy.http``), end to end.

Through the proxy on uvicorn with ``ZeroCopyProtocol``: hits, ranges and followers of
a running fill arrive byte-exact with every byte sent by ``sendfile``; keep-alive
connections carry on after such a response; a client leaving mid-body releases the
blob and logs no error; and on plain uvicorn (no extension) the same app streams
bytes instead. The uvloop server (``gar-proxy serve``) is covered by the subprocess
test at the end and by the real-client tests.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.http import sendfile
from proxy.http import server as zero_copy_server
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR
from testkit.images import make_layer
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.proxyprocess import ProxyProcess
from tests.conftest import FakeGarFactory
from tests.test_pull_cache import client, wait_for

REPO = "proj/repo/app"


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none", chunk_size=64 * 1024)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each ``sendfile`` call was asked to send."""
    calls: list[int] = []
    real = sendfile.sendfile  # what proxy.http.server calls

    async def counting(sock: int, file: int, offset: int, count: int, **options: Any) -> int:
        calls.append(count)
        return await real(sock, file, offset, count, **options)

    monkeypatch.setattr(zero_copy_server, "sendfile", counting)
    return calls


def test_hits_and_ranges_go_through_sendfile(
    tmp_path: Path, fake: FakeGAR, sent: list[int]
) -> None:
    data = make_layer(size=3_000_000, seed=21)
    digest = fake.put_blob("us", REPO, data)
    url = f"/v2/{REPO}/blobs/{digest}"
    with run_proxy(proxy_settings(tmp_path, fake.upstream)) as proxy, client(proxy) as http:
        assert http.get(url).content == data  # the fill, followed
        assert sum(sent) == len(data)
        sent.clear()
        # One keep-alive connection: each response must end exactly where it should.
        for _ in range(3):
            assert http.get(url).content == data
        part = http.get(url, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        head = http.head(url)
        assert head.headers["content-length"] == str(len(data)) and head.content == b""
        assert http.get(url).content == data
        assert sent == [len(data)] * 3 + [1000, len(data)]
        served = proxy.services.metrics.registry.get_sample_value(
            "garproxy_bytes_served_total", {"source": "blob"}
        )
    assert served == 5 * len(data) + 1000


def _read_response(raw: socket.socket, pending: bytearray) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length off ``raw``: (head, body)."""
    while b"\r\n\r\n" not in pending:
        pending += raw.recv(65536)
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    pending[:] = rest
    while len(pending) < length:
        pending += raw.recv(1 << 20)
    body = bytes(pending[:length])
    del pending[:length]
    return head, body


def test_pipelined_requests_get_their_own_bodies_in_order(
    tmp_path: Path, fake: FakeGAR, sent: list[int]
) -> None:
    first, second = make_layer(size=2_000_000, seed=26), make_layer(size=700_000, seed=27)
    digests = [fake.put_blob("us", REPO, data) for data in (first, second)]
    with run_proxy(proxy_settings(tmp_path, fake.upstream)) as proxy, client(proxy) as http:
        for digest in digests:
            http.get(f"/v2/{REPO}/blobs/{digest}")  # cached
        sent.clear()
        requests = [
            f"GET /v2/{REPO}/blobs/{digests[0]} HTTP/1.1\r\nHost: x\r\n\r\n",
            f"HEAD /v2/{REPO}/blobs/{digests[1]} HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET /v2/{REPO}/blobs/{digests[1]} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n",
            f"GET /v2/{REPO}/blobs/{digests[1]} HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        with socket.create_connection(("127.0.0.1", proxy.server.port)) as raw:
            raw.sendall("".join(requests).encode())  # one write: uvicorn queues the rest
            pending = bytearray()
            head, body = _read_response(raw, pending)
            assert head.startswith(b"HTTP/1.1 200") and body == first
            while b"\r\n\r\n" not in pending:  # the HEAD: headers only
                pending += raw.recv(65536)
            head, _, rest = bytes(pending).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert f"content-length: {len(second)}".encode() in head
            pending[:] = rest
            head, body = _read_response(raw, pending)
            assert head.startswith(b"HTTP/1.1 206") and body == second[10:20]
            head, body = _read_response(raw, pending)
            assert head.startswith(b"HTTP/1.1 200") and body == second
            assert not pending
    assert sent == [len(first), 10, len(second)]


def test_plain_uvicorn_gets_bytes_instead(tmp_path: Path, fake: FakeGAR, sent: list[int]) -> None:
    data = make_layer(size=1_500_000, seed=22)
    digest = fake.put_blob("us", REPO, data)
    url = f"/v2/{REPO}/blobs/{digest}"
    settings = proxy_settings(tmp_path, fake.upstream)
    with run_proxy(settings, zero_copy=False) as proxy, client(proxy) as http:
        assert http.get(url).content == data
        assert http.get(url).content == data
        assert http.get(url, headers={"Range": "bytes=-10"}).content == data[-10:]
    assert sent == []


def test_a_client_leaving_mid_body_releases_the_blob_quietly(
    tmp_path: Path, fake: FakeGAR, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_layer(size=32 << 20, seed=23)
    digest = fake.put_blob("us", REPO, data)
    request = f"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(caplog.handler)
    try:
        with run_proxy(proxy_settings(tmp_path, fake.upstream)) as proxy, client(proxy) as http:
            assert http.get(f"/v2/{REPO}/blobs/{digest}").content == data  # now cached
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", proxy.server.port)) as raw:
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                    raw.sendall(request)
                    assert raw.recv(65536).startswith(b"HTTP/1.1 200")
                    # Leave with most of the body unsent; RST, not a polite FIN.
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            cache = proxy.services.cache
            wait_for(lambda: not cache.in_use(Digest.parse(digest)))
            assert http.get(f"/v2/{REPO}/blobs/{digest}").content == data
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_followers_of_a_fill_are_sent_from_the_growing_file(
    tmp_path: Path, fake: FakeGAR, sent: list[int]
) -> None:
    data = make_layer(size=4 << 20, seed=24)
    digest = fake.put_blob("us", REPO, data)
    url = f"/v2/{REPO}/blobs/{digest}"
    with run_proxy(proxy_settings(tmp_path, fake.upstream)) as proxy:

        async def three() -> list[bytes]:
            async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as http:
                got = await asyncio.gather(*(http.get(url) for _ in range(3)))
            return [g.content for g in got]

        assert asyncio.run(three()) == [data] * 3
    assert fake.count("GET", "blob") == 1
    assert sum(sent) == 3 * len(data)
    assert len(sent) > 3  # in pieces, as the file grew


def test_the_uvloop_server_sends_hits_ranges_and_survives_a_reset(
    tmp_path: Path, fake: FakeGAR
) -> None:
    data = make_layer(size=8 << 20, seed=25)
    digest = fake.put_blob("us", REPO, data)
    path = f"/v2/{REPO}/blobs/{digest}"
    with ProxyProcess(tmp_path / "cache", fake.upstream) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            assert http.get(path).content == data
            with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
                raw.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert raw.recv(65536).startswith(b"HTTP/1.1 200")
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            for _ in range(2):
                assert http.get(path).content == data
            part = http.get(path, headers={"Range": "bytes=5-1048580"})
            assert part.status_code == 206 and part.content == data[5:1048581]
        log = proxy.log_text()
    assert "Traceback" not in log and "ERROR" not in log, log
