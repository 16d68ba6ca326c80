"""Load: 200 clients of warm GETs plus 20 cold pulls against one proxy process.

Each of ``LOAD_CLIENTS`` asyncio clients (its own ``httpx.AsyncClient``, so its own
connection) makes ``LOAD_ROUNDS`` rounds of a warm manifest-by-tag GET and a warm blob
GET; meanwhile 20 cold blobs are pulled, each by two clients at once. Then:

- zero errors: every answer 200 with the bytes asked for;
- each cold blob was fetched upstream exactly once (``fake.count``);
- the proxy's open descriptors (``/proc/PID/fd``) go back to their baseline;
- the invariant (``testkit/invariants.py``) holds over the cache and every download;
- p50/p99 latency are printed (``-s``).

CI form (200 clients x 2 rounds, small blobs; about 10 s)::

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_load.py -q -s

Full form: ``LOAD_FULL=1`` (200 clients x 20 rounds, 1 MiB blobs), same command.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_image, make_layer
from testkit.invariants import Download, Downloads, check
from testkit.proxyprocess import ProxyProcess

FULL = os.environ.get("LOAD_FULL") == "1"
LOAD_CLIENTS = 200
LOAD_ROUNDS = 20 if FULL else 2
COLD = 20
SIZE = (1 << 20) if FULL else (32 << 10)
DEADLINE = 300.0 if FULL else 60.0
REPO = "proj/repo/app"
# One TLS context for every client: httpx would load the CA bundle again for each of
# the 200 (about 20 ms of CPU apiece), which is client cost, not the proxy's.
TLS = ssl.create_default_context()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeGAR, ProxyProcess]]:
    fake = FakeGAR(auth="none")
    # The fake drops idle connections after 1 s, so the proxy's pool finds them closed.
    with (
        fake.serve(timeout_keep_alive=1),
        ProxyProcess(tmp_path / "cache", fake.upstream) as running,
    ):
        yield fake, running


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def fetch(http: httpx.AsyncClient, url: str, digest: str, out: Downloads) -> float:
    """One GET recorded for the invariant; returns its latency in seconds."""
    began = time.perf_counter()
    hasher, received, status, length, error = hashlib.sha256(), 0, 0, None, None
    try:
        async with http.stream("GET", url) as response:
            status = response.status_code
            header = response.headers.get("content-length")
            length = int(header) if header is not None else None
            async for chunk in response.aiter_raw():
                hasher.update(chunk)
                received += len(chunk)
    except httpx.HTTPError as cut:
        error = f"{type(cut).__name__}: {cut}"
    out.add(Download(digest, status, length, received, f"sha256:{hasher.hexdigest()}", error))
    return time.perf_counter() - began


async def warm_client(base: str, img: Image, out: Downloads) -> list[float]:
    layer = img.blobs[-1]
    headers = {"Accept": img.media_type}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers, verify=TLS) as http:
        latencies = []
        for _ in range(LOAD_ROUNDS):
            latencies.append(await fetch(http, f"/v2/{REPO}/manifests/1.0", img.digest, out))
            latencies.append(
                await fetch(http, f"/v2/{REPO}/blobs/{layer.digest}", layer.digest, out)
            )
        return latencies


async def cold_client(base: str, digest: str, out: Downloads) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=60, verify=TLS) as http:
        return [await fetch(http, f"/v2/{REPO}/blobs/{digest}", digest, out)]


async def load(base: str, img: Image, cold: list[str], out: Downloads) -> list[float]:
    tasks = [warm_client(base, img, out) for _ in range(LOAD_CLIENTS)]
    tasks += [cold_client(base, digest, out) for digest in cold * 2]
    results = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
    return [latency for latencies in results for latency in latencies]


def test_200_warm_clients_and_20_cold_pulls(served: tuple[FakeGAR, ProxyProcess]) -> None:
    fake, running = served
    img = build_image([make_layer(size=SIZE, seed=1)])
    fake.put_image("us", REPO, "1.0", img)
    cold = [fake.put_blob("us", REPO, make_layer(size=SIZE, seed=100 + i)) for i in range(COLD)]
    warmup = Downloads()
    asyncio.run(_warm(running.url, img, warmup))
    pokes = [fake.put_blob("us", REPO, make_layer(size=1024, seed=900 + i)) for i in range(6)]
    baseline = settled_fds(running.url, running.pid, pokes.pop())
    fake.reset_counts()

    downloads = Downloads()
    began = time.perf_counter()
    latencies = asyncio.run(load(running.url, img, cold, downloads))
    elapsed = time.perf_counter() - began

    errors = [d for d in downloads.items if not (d.complete and d.actual == d.digest)]
    p50, p99 = (
        statistics.quantiles(latencies, n=100)[49],
        statistics.quantiles(latencies, n=100)[98],
    )
    print(
        f"\nload: {len(downloads.items)} requests ({LOAD_CLIENTS} clients x {LOAD_ROUNDS} rounds"
        f" x 2 warm + {2 * COLD} cold) in {elapsed:.1f}s, errors={len(errors)},"
        f" p50={p50 * 1000:.1f}ms p99={p99 * 1000:.1f}ms, fds baseline={baseline}"
        f" after={open_fds(running.pid)}, upstream: {fake.count('GET', 'manifest')} manifest"
        f" GETs, {fake.count('HEAD', 'manifest')} HEADs, {fake.count('GET', 'blob')} blob GETs"
    )
    assert not errors, errors[:5]
    assert len(downloads.items) == LOAD_CLIENTS * LOAD_ROUNDS * 2 + 2 * COLD
    for digest in cold:
        assert fake.count("GET", "blob", path=digest) == 1, digest
    report = check(running.cache_dir, downloads)
    assert report.ok, report.problems
    now = baseline + 1
    while pokes and (now := settled_fds(running.url, running.pid, pokes.pop())) > baseline:
        pass
    held = sorted(
        os.readlink(f"/proc/{running.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{running.pid}/fd")
    )
    assert now <= baseline, f"proxy holds {now} descriptors, baseline {baseline}: {held}"


async def _warm(base: str, img: Image, out: Downloads) -> None:
    await warm_client(base, img, out)
    assert all(d.complete for d in out.items)


def settled_fds(base: str, pid: int, poke: str) -> int:
    """The proxy's descriptors with no client connected and one upstream connection.

    Its upstream pool keeps up to ``transport.max_keepalive`` idle connections and
    prunes those upstream has closed only when next used; so wait until the fake has
    closed its idle ones (after 1 s), send one more cold pull through the pool on a
    connection closed at once, and count once the proxy has seen that close."""
    time.sleep(1.3)
    assert httpx.get(f"{base}/v2/{REPO}/blobs/{poke}", timeout=10).status_code == 200
    time.sleep(0.3)
    return open_fds(pid)
