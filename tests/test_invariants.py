"""The invariant checker the fault and load suites rely on finds each kind of breakage:
a cached file whose bytes do not match its name, a row without its file, a file without
its row, a leftover temp file, and a complete download of the wrong bytes."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import httpx
import pytest

from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import make_layer
from testkit.invariants import Downloads, blob_files, check
from testkit.proxyharness import proxy_settings, run_proxy

REPO = "proj/repo/app"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache with two blobs pulled through a real proxy, which has stopped since."""
    fake = FakeGAR(auth="none")
    digests = [fake.put_blob("us", REPO, make_layer(size=50_000, seed=s)) for s in (1, 2)]
    with fake.serve():
        settings = proxy_settings(tmp_path, fake.upstream)
        with run_proxy(settings) as running, httpx.Client(base_url=running.url) as http:
            for digest in digests:
                assert http.get(f"/v2/{REPO}/blobs/{digest}").status_code == 200
    report = check(settings.cache.dir, timeout=5)
    assert report.ok and report.files == report.rows == 2, report
    return settings.cache.dir


def problems_after(cache: Path, meddle: str) -> list[str]:
    files = blob_files(cache)
    first = sorted(files)[0]
    if meddle == "flip":
        data = bytearray(files[first].read_bytes())
        data[0] ^= 1
        files[first].write_bytes(bytes(data))
    elif meddle == "drop-file":
        files[first].unlink()
    elif meddle == "drop-row":
        with contextlib.closing(sqlite3.connect(cache / "index.sqlite3")) as db, db:
            db.execute("DELETE FROM blobs WHERE digest = ?", (first,))
    elif meddle == "temp":
        (cache / "tmp" / "leftover").write_bytes(b"x")
    return check(cache, timeout=0.2).problems


@pytest.mark.parametrize(
    ("meddle", "found"),
    [
        ("flip", "does not hash to its name"),
        ("drop-file", "index row without a file"),
        ("drop-row", "blob file without a row"),
        ("temp", "temp file left"),
    ],
)
def test_each_breakage_is_found(cache: Path, meddle: str, found: str) -> None:
    problems = problems_after(cache, meddle)
    assert len(problems) == 1 and found in problems[0], problems


def test_a_complete_body_of_wrong_bytes_is_found(tmp_path: Path) -> None:
    """Straight from the fake, which has no verification: wrong bytes arrive whole."""
    fake = FakeGAR(auth="none", blob_redirects=False)  # the bytes answer the GET itself
    digest = fake.put_blob("us", REPO, make_layer(size=50_000, seed=3))
    fake.add_fault(Fault(kind="blob", corrupt=True))
    downloads = Downloads()
    with fake.serve() as url, httpx.Client(base_url=url) as http:
        item = downloads.get(http, f"/us/v2/{REPO}/blobs/{digest}", digest)
    assert item.complete and item.actual != digest
    report = check(tmp_path, downloads, timeout=0)
    assert report.complete == 1
    assert report.problems == [f"complete body of wrong content for {digest} (got {item.actual})"]
