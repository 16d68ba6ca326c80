"""One invariant over a cache directory and the downloads clients made, checked after
every fault case (``tests/test_fault_injection.py``) and the load test::

    downloads = Downloads()
    downloads.get(http, url, digest)            # records what the client received
    report = check(cache_dir, downloads)        # waits (bounded) for fills to go idle
    assert report.ok, report.problems

What must hold whatever upstream or a crash did:

- every file under ``CACHE/blobs/<alg>/<ab>/<hex>`` hashes to its name;
- every row of the index's ``blobs`` table has its file, and every file has its row
  (the SQLite index is opened read-only, so the check never changes what it checks);
- no temp file is left under ``CACHE/tmp`` once fills are idle;
- every download whose body arrived complete with a 2xx status (``len ==
  Content-Length``, or a chunked body that ended cleanly) hashes to the digest the client asked for.

The check waits, bounded, for ``tmp/`` to empty and files and rows to agree, because
a fill commits its file a moment before its row (and eviction removes them in the
same order); whatever still disagrees after the wait is a problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SETTLE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Download:
    digest: str
    status: int
    content_length: int | None
    received: int
    actual: str  # "<alg>:<hex>" of the bytes received
    error: str | None  # the transport error that cut the body, if any

    @property
    def complete(self) -> bool:
        # A chunked body (no Content-Length) that ended cleanly is complete too: its
        # framing says where it ends, so a client takes it as whole.
        return (
            200 <= self.status < 300
            and self.error is None
            and self.received == (self.content_length or self.received)
        )


@dataclass
class Downloads:
    """Client downloads of digests, recorded thread-safely, judged by :func:`check`."""

    items: list[Download] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Download) -> Download:
        with self._lock:
            self.items.append(item)
        return item

    def get(self, http: httpx.Client, url: str, digest: str) -> Download:
        """GET ``url`` (a blob or manifest by ``digest``), however the transfer ends."""
        hasher = hashlib.new(digest.split(":", 1)[0])
        received, status, length, error = 0, 0, None, None
        try:
            with http.stream("GET", url) as response:
                status = response.status_code
                header = response.headers.get("content-length")
                length = int(header) if header is not None else None
                for chunk in response.iter_raw():  # the wire bytes, not decoded
                    hasher.update(chunk)
                    received += len(chunk)
        except httpx.HTTPError as cut:
            error = f"{type(cut).__name__}: {cut}"
        actual = f"{hasher.name}:{hasher.hexdigest()}"
        return self.add(Download(digest, status, length, received, actual, error))

    def completed(self) -> list[Download]:
        with self._lock:
            return [d for d in self.items if d.complete]

    def bad(self) -> list[Download]:
        """Complete bodies whose bytes do not match the digest asked for: never allowed."""
        return [d for d in self.completed() if d.actual != d.digest]


@dataclass
class Report:
    files: int = 0
    rows: int = 0
    downloads: int = 0
    complete: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def blob_files(cache: Path) -> dict[str, Path]:
    root = cache / "blobs"
    if not root.is_dir():
        return {}
    return {f"{p.parent.parent.name}:{p.name}": p for p in root.glob("*/*/*") if p.is_file()}


def index_rows(cache: Path) -> dict[str, int]:
    db_path = cache / "index.sqlite3"
    if not db_path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        return {str(d): int(s) for d, s in db.execute("SELECT digest, size FROM blobs")}


def temp_files(cache: Path) -> list[Path]:
    tmp = cache / "tmp"
    return sorted(tmp.iterdir()) if tmp.is_dir() else []


def _hash(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _disagreements(cache: Path) -> list[str]:
    files, rows = blob_files(cache), index_rows(cache)
    problems = [f"index row without a file: {d}" for d in sorted(set(rows) - set(files))]
    problems += [f"blob file without a row: {d}" for d in sorted(set(files) - set(rows))]
    problems += [f"temp file left: {p.name}" for p in temp_files(cache)]
    for digest in sorted(set(rows) & set(files)):
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
            if files[digest].stat().st_size != rows[digest]:
                problems.append(f"row size {rows[digest]} != file size for {digest}")
    return problems


def check(
    cache: Path, downloads: Downloads | None = None, *, timeout: float = SETTLE_TIMEOUT
) -> Report:
    """The invariant over ``cache`` (and ``downloads``); see the module docstring."""
    deadline = time.monotonic() + timeout
    while (problems := _disagreements(cache)) and time.monotonic() < deadline:
        time.sleep(0.02)  # a fill still running, or between its file and its row
    report = Report(problems=list(problems))
    files = blob_files(cache)
    report.files, report.rows = len(files), len(index_rows(cache))
    for digest, path in files.items():
        algorithm, hex_ = digest.split(":", 1)
        with contextlib.suppress(FileNotFoundError):
            if _hash(path, algorithm) != hex_:
                report.problems.append(f"blob file does not hash to its name: {digest}")
    if downloads is not None:
        report.downloads = len(downloads.items)
        report.complete = len(downloads.completed())
        report.problems += [
            f"complete body of wrong content for {d.digest} (got {d.actual})"
            for d in downloads.bad()
        ]
    return report
