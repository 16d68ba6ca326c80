"""Bounded work per request: no input a client sends can cost the proxy more than a
fixed amount of CPU or memory, or turn into a 500.

Each case here failed before the bound existed: a 5,000-digit number in ``Range`` or
``Content-Range`` (Python refuses ``int()`` of more than 4,300 digits: a 500), an
``Accept`` header of 300 KB (a quadratic scan: ~15 s of a stalled event loop), 1 MB of
request headers (accepted whole), and a manifest nested 100,000 deep (``RecursionError``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import pytest

from proxy.http.server import MAX_HEADER_BYTES
from proxy.oci import mediatypes as mt
from proxy.oci.errors import RegistryError
from proxy.oci.manifest import parse_manifest
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.conftest import FakeGarFactory

REPO = "proj/repo/app"
HUGE = "9" * 5000
T = TypeVar("T")


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "repo")  # GAR creates none on push
    return fake


@pytest.fixture
def running(tmp_path: Path, fake: FakeGAR) -> Iterator[RunningProxy]:
    with run_proxy(proxy_settings(tmp_path, fake.upstream)) as started:
        yield started


@pytest.fixture
def client(running: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as http:
        yield http


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


@pytest.mark.parametrize(
    "header", [f"bytes={HUGE}-", f"bytes=0-{HUGE}", f"bytes=-{HUGE}", f"bytes={HUGE}-{HUGE}"]
)
def test_a_range_with_a_5000_digit_number_is_416(
    fake: FakeGAR, client: httpx.Client, header: str
) -> None:
    image = build_image([make_layer(size=1000)])
    fake.put_image("us", REPO, "1.0", image)
    digest = image.layers[0].digest
    answer = client.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": header})
    assert answer.status_code == 416, answer.text[:300]
    assert code(answer) == "RANGE_INVALID"
    assert answer.headers["content-range"] == f"bytes */{len(image.layers[0].data)}"
    # The blob itself is intact and still served.
    assert client.get(f"/v2/{REPO}/blobs/{digest}").content == image.layers[0].data


@pytest.mark.parametrize("content_range", [f"0-{HUGE}", f"{HUGE}-{HUGE}", f"0-9/{HUGE}"])
def test_a_content_range_with_a_5000_digit_number_is_416(
    client: httpx.Client, content_range: str
) -> None:
    started = client.post(f"/v2/{REPO}/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["location"]
    answer = client.patch(location, content=b"x" * 10, headers={"Content-Range": content_range})
    assert answer.status_code == 416, answer.text[:300]
    assert code(answer) == "RANGE_INVALID"
    assert answer.headers["range"] == "0-0"  # still at offset 0: nothing was taken
    fine = client.patch(location, content=b"x" * 10, headers={"Content-Range": "0-9"})
    assert fine.status_code == 202, fine.text[:300]


def _lines_run(function: Callable[..., T], *args: Any) -> tuple[T, int]:
    """``function(*args)`` and how many of its lines ran: its work, counted, not timed."""
    code, count, before = function.__code__, 0, sys.gettrace()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        count += event == "line"
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    sys.settrace(calls)
    try:
        return function(*args), count
    finally:
        sys.settrace(before)


def test_parsing_a_300_kb_accept_header_is_bounded() -> None:
    """A 300 KB header once cost ~15 s (a list scan per type); now the types are an
    ordered set and parsing stops at ``MAX_ACCEPT_TYPES``: a few lines per type kept,
    however long the header."""
    header = ", ".join(f"application/x-type-{i}" for i in range(15_000))  # ~330 KB
    types, lines = _lines_run(mt.parse_accept, [header, mt.OCI_MANIFEST])
    assert types[0] == "application/x-type-0"
    assert len(types) == mt.MAX_ACCEPT_TYPES
    assert lines < 10 * mt.MAX_ACCEPT_TYPES, lines
    # The same type 15,000 times: every item is read, at the same few lines each.
    _, repeated = _lines_run(mt.parse_accept, [", ".join([mt.OCI_MANIFEST] * 15_000)])
    assert repeated < 10 * 15_000, repeated


def test_an_accept_list_keeps_the_manifest_types_within_its_bound() -> None:
    header = ", ".join([mt.OCI_INDEX, mt.OCI_INDEX, "text/plain;q=0.1", mt.OCI_MANIFEST])
    assert mt.parse_accept([header]) == (mt.OCI_INDEX, "text/plain", mt.OCI_MANIFEST)


def _raw_request(port: int, headers: bytes) -> bytes:
    """Send a GET with ``headers`` and read the whole answer; the server may close first."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # Refused before the end, it still reads what the server answered.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_1_mb_of_headers_is_431_and_does_not_delay_other_clients(running: RunningProxy) -> None:
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    big_headers = pad * 1000  # ~1 MB in a thousand headers
    answers: list[bytes] = []
    sender = threading.Thread(
        target=lambda: answers.append(_raw_request(running.server.port, big_headers))
    )
    # Each request of the other client must be answered within its read timeout while
    # the big headers arrive (they were once read and parsed whole, stalling the loop).
    with httpx.Client(base_url=running.url, timeout=httpx.Timeout(30, read=5)) as other:
        sender.start()
        answered = 0
        while sender.is_alive() or not answered:
            assert other.get("/v2/").status_code == 200
            answered += 1
        sender.join(30)
    status_line, _, rest = answers[0].partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", answers[0][:300]
    body = rest.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"
    # The connection is closed after it: nothing else is read from it.
    assert b"HTTP/1.1 200" not in answers[0]


def test_one_huge_header_and_one_huge_url_are_431_too(running: RunningProxy) -> None:
    one_header = b"Accept: " + b"a/b," * (MAX_HEADER_BYTES // 2) + b"\r\n"
    assert _raw_request(running.server.port, one_header).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=30) as sock:
        sock.sendall(b"GET /v2/" + b"a" * (MAX_HEADER_BYTES + 1))
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")


def test_the_limit_applies_to_each_request_of_a_kept_alive_connection(
    running: RunningProxy,
) -> None:
    small = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=30) as sock:
        for _ in range(3):  # 120 KB in all over the connection: each request is under
            sock.sendall(small)
            answer = b""
            while not answer.endswith(b"\r\n\r\n{}"):  # /v2/ answers {}
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        sock.sendall(small.replace(b"a" * 40_000, b"a" * 70_000))
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")


def test_headers_under_the_limit_and_large_bodies_still_pass(
    client: httpx.Client, running: RunningProxy
) -> None:
    headers = {f"x-pad-{i}": "a" * 100 for i in range(MAX_HEADER_BYTES // 200)}  # ~half
    assert client.get("/v2/", headers=headers).status_code == 200
    # A body far over the header limit, in the same packets as the headers, is no header.
    started = client.post(f"/v2/{REPO}/blobs/uploads/")
    data = b"z" * (4 * MAX_HEADER_BYTES)
    answer = client.patch(started.headers["location"], content=data)
    assert answer.status_code == 202, answer.text[:300]
    assert answer.headers["range"] == f"0-{len(data) - 1}"


def nested(depth: int) -> bytes:
    return b'{"schemaVersion": 2, "config": ' + b"[" * depth + b"]" * depth + b"}"


def test_a_manifest_nested_100000_deep_is_manifest_invalid(
    fake: FakeGAR, client: httpx.Client
) -> None:
    answer = client.put(
        f"/v2/{REPO}/manifests/deep",
        content=nested(100_000),
        headers={"Content-Type": mt.OCI_MANIFEST},
    )
    assert answer.status_code == 400, answer.text[:300]
    assert code(answer) == "MANIFEST_INVALID"
    assert "nest" in answer.json()["errors"][0]["message"]
    assert fake.count(kind="manifest") == 0


def test_nesting_depth_counts_brackets_outside_strings_only() -> None:
    with pytest.raises(RegistryError, match="nest"):
        parse_manifest(nested(65))
    deep_text = json.dumps({"annotations": {"a": "[" * 10_000 + '{\\"' * 1000}})
    body = json.loads(deep_text)
    body.update(schemaVersion=2, mediaType=mt.OCI_INDEX, manifests=[])
    assert parse_manifest(json.dumps(body).encode()).manifests == ()
    utf16 = json.dumps({"schemaVersion": 2, "manifests": [[[[]]]] * 1}).encode("utf-16")
    with pytest.raises(RegistryError, match="descriptor"):
        parse_manifest(utf16)  # decoded the way json.loads does, then checked


def test_a_tag_list_over_the_body_limit_is_paginated_not_an_error(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxy.services import listings

    image = build_image([make_layer({"t": b"many"})])
    tags = [f"v{n:04d}" for n in range(300)]
    for tag in tags:
        fake.put_image("us", REPO, tag, image)
    # GCR-shaped (docs/GAR.md N3): the whole list is about 7 KB, a page of 100 under 2 KB
    running.services.listings.limit = 3000
    monkeypatch.setattr(listings, "PAGE_SIZE", 100)
    first = client.get(f"/v2/{REPO}/tags/list")
    assert first.status_code == 200, first.text
    assert first.json()["tags"] == tags[:100]
    seen, response = list(first.json()["tags"]), first
    while "link" in response.headers:
        url = response.headers["link"].split(">")[0].lstrip("<")
        response = client.get(url)
        assert response.status_code == 200
        seen += response.json()["tags"]
    assert seen == tags


def test_a_client_leaving_mid_upload_is_logged_as_such_without_a_traceback(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = client.post(f"/v2/{REPO}/blobs/uploads/")
    assert started.status_code == 202
    path = started.headers["location"]
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=30) as sock:
        sock.sendall(head + b"x" * 300_000)
    deadline = time.monotonic() + 10
    while not any("left" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.02)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client leaving"
    again = client.get(path)  # the session is still usable, at what upstream holds
    assert again.status_code == 204
