"""Fault injection: a table of upstream faults, each met by concurrent clients, with the
cache invariant (``testkit/invariants.py``) checked after every case.

For every case: the fake GAR misbehaves (status storms with ``Retry-After``, stalls,
slow bodies, truncation, wrong bytes, resets, chunked and gzip answers, redirects, the
token endpoint down), several clients pull the same image's blobs and manifest by
digest at once, then

- no client received a complete body (``len == Content-Length``, 2xx) whose bytes do
  not hash to the digest it asked for;
- every cached file hashes to its name, index rows and files agree, ``tmp/`` is empty;
- once the fault is cleared, a pull succeeds with the right bytes (and the invariant
  still holds).

SIGKILL mid-fill and mid-upload run the proxy as a subprocess, kill it while clients
are mid-transfer, and restart it on the same cache.

CI form (small blobs, 4 clients, well under 60 s)::

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_fault_injection.py -q

Full form (4 MiB layers, 16 clients): ``FAULTS_FULL=1`` in the environment, same
command. ``-s`` prints one line per case with the invariant's figures.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import Image, build_image, make_layer
from testkit.invariants import Downloads, Report, check
from testkit.proxyprocess import ProxyProcess
from tests.conftest import FakeGarFactory, ProxyFactory

FULL = os.environ.get("FAULTS_FULL") == "1"
LAYER = (4 << 20) if FULL else (256 << 10)
CLIENTS = 16 if FULL else 4
FAKE_CHUNK = 64 << 10  # the fake sends bodies in pieces this big: faults land mid-body
REPO = "proj/repo/app"


@dataclass
class Case:
    faults: list[Fault]
    all_ok: bool = False  # the proxy absorbs this fault: every client gets whole bodies
    settings: dict[str, str] = field(default_factory=dict)


def _blob(**knobs: object) -> Fault:
    return Fault(kind="blob", method="GET", **knobs)  # type: ignore[arg-type]


CASES: dict[str, Case] = {
    "429-storm-retry-after-absorbed": Case([_blob(status=429, retry_after=0, times=2)], True),
    "503-storm-retry-after": Case([Fault(kind="blob", status=503, retry_after=0)]),
    "500-storm": Case([Fault(kind="blob", status=500)]),
    "502-then-ok": Case([_blob(status=502, times=2)], True),
    "manifest-503-storm": Case([Fault(kind="manifest", status=503, retry_after=0)]),
    "stall-before-headers": Case([_blob(delay=0.5, times=2)], True),
    "stall-past-timeout": Case(
        [_blob(delay=1.5)], settings={"transport__timeout": "0.5", "transport__retries": "0"}
    ),
    "slow-body": Case([_blob(slow_body=0.01)], True),
    "truncated": Case([_blob(truncate_at=100_000)]),
    "truncated-once": Case([_blob(truncate_at=100_000, times=1)]),
    "wrong-bytes": Case([_blob(corrupt=True)]),
    "wrong-manifest-bytes": Case([Fault(kind="manifest", method="GET", corrupt=True)]),
    "reset-mid-body": Case([_blob(truncate_at=100_000, reset=True)]),
    "reset-before-headers": Case([_blob(reset=True)]),
    "chunked": Case([_blob(chunked=True)], True),
    "gzip": Case([_blob(gzip=True)], True),
    "redirect": Case([_blob(redirect=True, path=r"^/us/")], True),
    "gzip-wrong-bytes": Case([_blob(gzip=True, corrupt=True)]),
}
RESULTS: list[str] = []


def image() -> Image:
    return build_image([make_layer(size=LAYER, seed=s) for s in (1, 2)])


def pull_all(base: str, img: Image, downloads: Downloads, clients: int = CLIENTS) -> None:
    """``clients`` concurrent clients, each fetching the manifest and every blob."""
    wanted = [(f"/v2/{REPO}/manifests/{img.digest}", img.digest)]
    wanted += [(f"/v2/{REPO}/blobs/{b.digest}", b.digest) for b in img.blobs]

    def one_client(_: int) -> None:
        accept = {"Accept": img.media_type}
        with httpx.Client(base_url=base, timeout=15, headers=accept) as http:
            for url, digest in wanted:
                downloads.get(http, url, digest)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))


def assert_holds(cache: Path, downloads: Downloads, name: str) -> Report:
    report = check(cache, downloads)
    RESULTS.append(
        f"{name}: files={report.files} rows={report.rows} downloads={report.downloads}"
        f" complete={report.complete} problems={len(report.problems)}"
    )
    print(RESULTS[-1])
    assert report.ok, report.problems
    return report


def assert_pull_succeeds(base: str, img: Image, cache: Path, name: str) -> None:
    after = Downloads()
    pull_all(base, img, after, clients=2)
    failed = [d for d in after.items if not (d.complete and d.actual == d.digest)]
    assert not failed, failed
    assert_holds(cache, after, name + " (after)")


@pytest.mark.parametrize("name", list(CASES))
def test_fault_case(name: str, fake_gar: FakeGarFactory, proxy: ProxyFactory) -> None:
    case = CASES[name]
    fake = fake_gar(auth="none", chunk_size=FAKE_CHUNK)
    img = image()
    fake.put_image("us", REPO, "1.0", img)
    running = proxy(fake.upstream, **{"transport__retries": "2", **case.settings})
    for fault in case.faults:
        fake.add_fault(fault)
    downloads = Downloads()
    pull_all(running.url, img, downloads)
    assert sum(f.hits for f in case.faults) >= 1, "the fault never acted"
    assert_holds(running.settings.cache.dir, downloads, name)
    if case.all_ok:
        failed = [d for d in downloads.items if not d.complete]
        assert not failed, failed
    fake.clear_faults()
    assert_pull_succeeds(running.url, img, running.settings.cache.dir, name)


def test_token_endpoint_down(fake_gar: FakeGarFactory, proxy: ProxyFactory) -> None:
    fake = fake_gar(
        auth="gcp", access_tokens={"ya29.good"}, registry_token_only=True, chunk_size=FAKE_CHUNK
    )
    img = image()
    fake.put_image("us", REPO, "1.0", img)
    running = proxy(
        fake.upstream,
        upstream__auth="basic",
        upstream__username="oauth2accesstoken",
        upstream__password="ya29.good",
        transport__retries="1",
    )
    down = fake.add_fault(Fault(kind="token", status=503, retry_after=0))
    downloads = Downloads()
    pull_all(running.url, img, downloads)
    assert down.hits >= 1
    assert not downloads.completed(), "a body was served without any upstream token"
    assert_holds(running.settings.cache.dir, downloads, "token-endpoint-down")
    fake.clear_faults()
    assert_pull_succeeds(running.url, img, running.settings.cache.dir, "token-endpoint-down")


# ------------------------------------------------------------------ SIGKILL mid-transfer


@pytest.fixture
def process(tmp_path: Path, fake_gar: FakeGarFactory) -> Iterator[tuple[FakeGAR, ProxyProcess]]:
    fake = fake_gar(auth="none", chunk_size=FAKE_CHUNK)
    fake.add_repository("us", "proj", "repo")  # GAR creates none on push
    running = ProxyProcess(
        tmp_path / "cache", fake.upstream, env={"GAR_PROXY_TRANSPORT_RETRIES": "1"}
    )
    try:
        yield fake, running.start()
    finally:
        running.stop()


def kill_when(running: ProxyProcess, started: threading.Event) -> None:
    assert started.wait(20), "no transfer got going"
    running.kill()


def test_sigkill_mid_fill(process: tuple[FakeGAR, ProxyProcess]) -> None:
    fake, running = process
    img = build_image([make_layer(size=max(LAYER, 1 << 20), seed=s) for s in (3, 4)])
    fake.put_image("us", REPO, "1.0", img)
    fake.add_fault(_blob(slow_body=0.05))  # 16+ pieces per layer: about a second each
    downloads, started = Downloads(), threading.Event()
    layers = [b.digest for b in img.blobs if b.size >= 1 << 20]
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(downloads_get, running.url, d, downloads, started)
            for d in layers * (CLIENTS // 2)
        ]
        kill_when(running, started)
        for future in futures:
            future.result(30)
    fake.clear_faults()
    running.start()  # same cache: start-up recovery runs
    assert_holds(running.cache_dir, downloads, "sigkill-mid-fill")
    assert_pull_succeeds(running.url, img, running.cache_dir, "sigkill-mid-fill")


def downloads_get(base: str, digest: str, downloads: Downloads, started: threading.Event) -> None:
    """One blob download recorded in ``downloads``; sets ``started`` at its first bytes."""
    with httpx.Client(base_url=base, timeout=15, event_hooks=_hooks(started)) as http:
        downloads.get(http, f"/v2/{REPO}/blobs/{digest}", digest)


def _hooks(started: threading.Event) -> dict[str, list[Callable[[httpx.Response], None]]]:
    return {"response": [lambda response: started.set()]}


def upload_slowly(base: str, data: bytes, started: threading.Event) -> int:
    """POST then a PATCH whose body trickles in; the status, or 0 if the proxy died."""

    def body() -> Iterator[bytes]:
        for at in range(0, len(data), FAKE_CHUNK):
            started.set()
            time.sleep(0.05)
            yield data[at : at + FAKE_CHUNK]

    try:
        with httpx.Client(base_url=base, timeout=15) as http:
            begun = http.post(f"/v2/{REPO}/blobs/uploads/")
            assert begun.status_code == 202, begun.text
            return http.patch(begun.headers["location"], content=body()).status_code
    except httpx.HTTPError:
        return 0


def push(base: str, data: bytes, digest: str) -> None:
    with httpx.Client(base_url=base, timeout=15) as http:
        begun = http.post(f"/v2/{REPO}/blobs/uploads/")
        assert begun.status_code == 202, begun.text
        done = http.put(begun.headers["location"], params={"digest": digest}, content=data)
        assert done.status_code == 201, done.text


def test_sigkill_mid_upload(process: tuple[FakeGAR, ProxyProcess]) -> None:
    fake, running = process
    blobs = [make_layer(size=max(LAYER, 1 << 20), seed=10 + i) for i in range(CLIENTS)]
    started = threading.Event()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(upload_slowly, running.url, b, started) for b in blobs]
        kill_when(running, started)
        statuses = [future.result(30) for future in futures]
    assert 202 not in statuses, "an upload finished although the proxy was killed"
    running.start()
    assert_holds(running.cache_dir, Downloads(), "sigkill-mid-upload")
    digest = str(Digest.of(blobs[0]))
    push(running.url, blobs[0], digest)
    assert fake.get_blob("us", REPO, digest) == blobs[0]
    after = Downloads()
    with httpx.Client(base_url=running.url, timeout=15) as http:
        after.get(http, f"/v2/{REPO}/blobs/{digest}", digest)
    assert after.items[0].complete and not after.bad()
    assert_holds(running.cache_dir, after, "sigkill-mid-upload (after)")
