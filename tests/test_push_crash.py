"""A proxy killed with SIGKILL mid-upload, restarted on the same cache: the client asks
where its upload stands, goes on from there, and the blob lands in ONE good write.

The proxy runs as a subprocess (``kill -9`` is a real crash). What survives is the
session's row in SQLite and its spool file (``CACHE/uploads/<id>``), which holds what
the client had sent; the upstream session a write was under way to is never written
again (the row says it was spent before the write began).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from testkit.fakes.gar import FakeGAR
from testkit.proxyprocess import ProxyProcess

REPO = "proj/repo/app"
UPLOADS = f"/v2/{REPO}/blobs/uploads/"
SIZE = 400_000
FIRST = 100_000


@pytest.fixture
def gar() -> Iterator[tuple[FakeGAR, str]]:
    fake = FakeGAR(auth="none")
    fake.add_repository("us", "proj", "repo")
    with fake.serve() as url:
        yield fake, url + "/{location}"


def blob(seed: int) -> tuple[bytes, str]:
    data = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(SIZE // 32))
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def spool_size(cache: Path, location: str) -> int:
    path = cache / "uploads" / location.rsplit("/", 1)[1]
    return path.stat().st_size if path.exists() else 0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll what another process does (no event crosses the process boundary)."""
    pause = threading.Event()
    for _ in range(2000):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def resume(proxy: ProxyProcess, location: str, data: bytes, digest: str) -> int:
    """What a spec-following client does: ask the offset, send the rest, finish."""
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        status = client.get(location)
        assert status.status_code == 204, status.text
        held = int(status.headers["range"].split("-")[1]) + 1
        rest = client.patch(
            location, content=data[held:], headers={"Content-Range": f"{held}-{len(data) - 1}"}
        )
        assert rest.status_code == 202, rest.text
        done = client.put(location, params={"digest": digest})
        assert done.status_code == 201, done.text
    return held


def test_killed_during_a_streamed_patch_the_blob_lands_in_one_write(
    gar: tuple[FakeGAR, str], tmp_path: Path
) -> None:
    fake, upstream = gar
    data, digest = blob(1)
    cache = tmp_path / "cache"
    proxy = ProxyProcess(cache, upstream).start()
    try:
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            location = client.post(UPLOADS).headers["location"]
            fake.write_started.clear()

            def body() -> Iterator[bytes]:
                yield data[:FIRST]
                assert fake.write_started.wait(15)  # it streams on upstream meanwhile
                wait_for(lambda: spool_size(cache, location) == FIRST, "the spool")
                proxy.kill()
                yield data[FIRST:]

            with pytest.raises(httpx.HTTPError):
                client.patch(location, content=body())
        proxy.start()  # same cache, a new port
        assert resume(proxy, location, data, digest) == FIRST
    finally:
        proxy.kill()
    assert fake.get_blob("us", REPO, digest) == data
    # The write under way when the proxy died stored nothing; one good write did.
    assert [w.accepted for w in fake.upload_writes] == [False, True]
    assert fake.writes(digest) == 1 and fake.count("POST", "upload") == 2


def test_killed_while_chunks_are_spooled_the_blob_lands_in_one_write(
    gar: tuple[FakeGAR, str], tmp_path: Path
) -> None:
    fake, upstream = gar
    data, digest = blob(2)
    cache = tmp_path / "cache"
    proxy = ProxyProcess(cache, upstream).start()
    try:
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            location = client.post(UPLOADS).headers["location"]
            first = client.patch(
                location, content=data[:FIRST], headers={"Content-Range": f"0-{FIRST - 1}"}
            )
            assert first.status_code == 202
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            head = (
                f"PATCH {location} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Range: {FIRST}-{2 * FIRST - 1}\r\nContent-Length: {FIRST}\r\n\r\n"
            )
            sock.sendall(head.encode() + data[FIRST : FIRST + 30_000])
            wait_for(lambda: spool_size(cache, location) == FIRST + 30_000, "the spool")
            proxy.kill()
        proxy.start()
        assert resume(proxy, location, data, digest) == FIRST + 30_000  # kept what came
    finally:
        proxy.kill()
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes() == fake.writes(digest) == 1  # nothing went up before the PUT


def test_killed_during_the_final_write_the_blob_lands_in_one_write(
    gar: tuple[FakeGAR, str], tmp_path: Path
) -> None:
    fake, upstream = gar
    data, digest = blob(3)
    cache = tmp_path / "cache"
    proxy = ProxyProcess(cache, upstream).start()
    try:
        with httpx.Client(base_url=proxy.url, timeout=30) as client:
            location = client.post(UPLOADS).headers["location"]
            fake.write_started.clear()

            def body() -> Iterator[bytes]:
                yield data[:FIRST]
                assert fake.write_started.wait(15)
                wait_for(lambda: spool_size(cache, location) == FIRST, "the spool")
                proxy.kill()
                yield data[FIRST:]

            with pytest.raises(httpx.HTTPError):
                client.put(location, params={"digest": digest}, content=body())
        proxy.start()
        assert resume(proxy, location, data, digest) == FIRST
    finally:
        proxy.kill()
    assert fake.get_blob("us", REPO, digest) == data
    assert [w.accepted for w in fake.upload_writes] == [False, True]
    assert fake.writes(digest) == 1
