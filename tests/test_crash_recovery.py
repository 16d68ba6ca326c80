"""A proxy killed with SIGKILL, and a cache meddled with, come back consistent.

The proxy runs as a subprocess so that ``kill -9`` is a real crash: no shutdown code,
a temp file half written, SQLite mid-transaction. On restart, start-up recovery
removes temp files, drops index rows whose files are gone, adopts files whose bytes
match their name and removes those that do not; nothing partial is ever served.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.fakes.gar import FakeGAR, Fault
from testkit.proxyprocess import ProxyProcess

REPO = "proj/repo/app"
BIG = 200 << 20
CHUNK = 1 << 20


@pytest.fixture
def gar() -> Iterator[tuple[FakeGAR, str]]:
    fake = FakeGAR(auth="none", chunk_size=CHUNK)
    with fake.serve() as url:
        yield fake, url + "/{location}"


def blob_path(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest[7:9] / digest[7:]


def index_rows(cache: Path) -> dict[str, int]:
    with sqlite3.connect(cache / "index.sqlite3") as db:
        return {d: s for d, s in db.execute("SELECT digest, size FROM blobs")}


def cached_files(cache: Path) -> dict[str, int]:
    return {f"sha256:{p.name}": p.stat().st_size for p in (cache / "blobs" / "sha256").glob("*/*")}


def temp_files(cache: Path) -> list[Path]:
    return list((cache / "tmp").iterdir())


def wait_for(condition: object, timeout: float = 20.0, what: str = "condition") -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_mid_fill_then_restart_serves_only_the_whole_verified_blob(
    gar: tuple[FakeGAR, str], tmp_path: Path
) -> None:
    fake, upstream = gar
    data = random.Random(7).randbytes(BIG)
    digest = fake.put_blob("us", REPO, data)
    # 200 chunks of 1 MiB, 50 ms apart: the fill would take ~10 s; it dies after ~1 s.
    fake.add_fault(Fault(method="GET", kind="blob", slow_body=0.05, times=1))
    cache = tmp_path / "cache"
    proxy = ProxyProcess(cache, upstream).start()
    try:
        received = 0
        with (
            httpx.Client(timeout=30) as client,
            client.stream("GET", f"{proxy.url}/v2/{REPO}/blobs/{digest}") as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-length"] == str(BIG)
            with pytest.raises(httpx.HTTPError):  # the response is cut short, visibly
                for chunk in response.iter_raw():
                    received += len(chunk)
                    if received >= 8 << 20 and proxy.proc and proxy.proc.poll() is None:
                        proxy.kill()
        assert 8 << 20 <= received < BIG
    finally:
        proxy.kill()
    # The crash left a partial temp file and no trace of the blob in the cache proper.
    (partial,) = temp_files(cache)
    assert 0 < partial.stat().st_size < BIG
    assert not blob_path(cache, digest).exists()
    assert digest not in index_rows(cache)

    with ProxyProcess(cache, upstream) as restarted:
        assert temp_files(cache) == []
        head = httpx.head(f"{restarted.url}/v2/{REPO}/blobs/{digest}", timeout=30)
        assert head.status_code == 200  # answered by upstream: nothing cached to offer
        assert fake.count("HEAD", "blob") == 1
        hasher, size = hashlib.sha256(), 0
        with httpx.stream("GET", f"{restarted.url}/v2/{REPO}/blobs/{digest}", timeout=60) as got:
            assert got.status_code == 200
            for chunk in got.iter_bytes():
                hasher.update(chunk)
                size += len(chunk)
        assert (size, f"sha256:{hasher.hexdigest()}") == (BIG, digest)
        assert fake.count("GET", "blob") == 2  # refetched, not resumed from the fragment
        wait_for(lambda: digest in index_rows(cache), what="the index row")
        assert index_rows(cache) == {digest: BIG} == cached_files(cache)
        assert temp_files(cache) == []


def test_start_up_drops_rows_without_files_and_adopts_or_removes_files_without_rows(
    gar: tuple[FakeGAR, str], tmp_path: Path
) -> None:
    fake, upstream = gar
    blobs = {name: random.Random(name).randbytes(64 << 10) for name in ("gone", "orphan", "kept")}
    digests = {name: fake.put_blob("us", REPO, data) for name, data in blobs.items()}
    cache = tmp_path / "cache"
    with ProxyProcess(cache, upstream) as proxy, httpx.Client(timeout=30) as client:
        for digest in digests.values():
            assert client.get(f"{proxy.url}/v2/{REPO}/blobs/{digest}").status_code == 200
    assert set(index_rows(cache)) == set(digests.values())

    # A row whose file is gone; a good file whose row is gone; a file whose bytes do not
    # match its name; and the temp file of a fill that never finished.
    blob_path(cache, digests["gone"]).unlink()
    with sqlite3.connect(cache / "index.sqlite3") as db:
        db.execute("DELETE FROM blobs WHERE digest = ?", (digests["orphan"],))
    liar = "sha256:" + hashlib.sha256(b"what the name promises").hexdigest()
    blob_path(cache, liar).parent.mkdir(parents=True, exist_ok=True)
    blob_path(cache, liar).write_bytes(b"something else entirely")
    (cache / "tmp" / "0123abcd").write_bytes(b"half a blob")

    fake.reset_counts()
    with ProxyProcess(cache, upstream) as proxy, httpx.Client(timeout=30) as client:
        expected = {digests[n]: len(blobs[n]) for n in ("orphan", "kept")}
        assert index_rows(cache) == expected == cached_files(cache)
        assert temp_files(cache) == []
        assert (
            "RecoveryReport(temp_removed=1, rows_dropped=1, files_adopted=1, files_removed=1)"
            in proxy.log_text()
        )
        for name, digest in digests.items():
            got = client.get(f"{proxy.url}/v2/{REPO}/blobs/{digest}")
            assert got.content == blobs[name]
        # Only the blob whose file was gone went back upstream.
        assert fake.count("GET", "blob") == 1
        assert fake.count("GET", "blob", path=digests["gone"]) == 1
        assert client.get(f"{proxy.url}/v2/{REPO}/blobs/{liar}").status_code == 404
