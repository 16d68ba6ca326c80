"""Scenario 9: cost as the cache grows.

For 1k, 10k and 100k cached blobs (``--quick``: 1k and 10k) and 10k tags, generated
straight into a cache (``bench.scalecache``): start-up time (process start until
``/v2/`` answers, on a cleanly closed cache), RSS after start and after the HEADs,
blob and manifest HEAD latency (p50/p99, the Python generator going round 1000
distinct paths at every size, so lookups are not one hot row) and server CPU per 1k HEADs, and
the time of ``gar-proxy gc`` evicting 10% (``cache.max_size`` set to 90% of the
bytes). Reported as a curve, one column per size. The proxy never needs its
upstream here: a HEAD that went upstream would show as relay bytes (noted).
"""

from __future__ import annotations

import random
import re
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from bench import measure as mm
from bench import report
from bench.load import python_head_load
from bench.procstat import cpu_seconds
from bench.rig import Rig
from bench.scalecache import ScaleCache, generate
from testkit.proxyprocess import ProxyProcess, run_cli

if TYPE_CHECKING:  # bench.scenarios imports this module
    from bench.scenarios import Options

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
TAGS, QUICK_TAGS = 10_000, 2_000
# Distinct paths each HEAD run goes round: the same number at every size (the smallest
# size), so the sizes differ only in how much is indexed around them, not in how many
# first lookups (a query each, then remembered) a run makes.
SAMPLE = 1_000
CONNECTIONS = 16
READY_TIMEOUT = 60.0
MiB = 1024 * 1024
# The proxy's tags stay fresh for the whole scenario: a HEAD by tag never revalidates.
# Bytecode is cached (an empty value turns PYTHONDONTWRITEBYTECODE off), as an installed
# package has it: start-up time is then the proxy's, not the compiler's.
ENV = {"GAR_PROXY_CACHE_TAG_TTL": "1d", "PYTHONDONTWRITEBYTECODE": ""}


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    digits: int


ROWS = (
    Row("gen", "generate the cache (s)", 1),
    Row("first", "first start, never-opened cache (s)", 2),
    Row("start", "start-up, clean cache (s)", 2),
    Row("startcpu", "start-up, clean cache: CPU (s)", 2),
    Row("rss0", "RSS after start (MiB)", 0),
    Row("rss1", "RSS after the HEADs (MiB)", 0),
    Row("blob50", "blob HEAD p50 (ms)", 2),
    Row("blob99", "blob HEAD p99 (ms)", 2),
    Row("blobcpu", "blob HEAD server CPU per 1k (s)", 3),
    Row("man50", "manifest HEAD by tag p50 (ms)", 2),
    Row("man99", "manifest HEAD by tag p99 (ms)", 2),
    Row("mancpu", "manifest HEAD server CPU per 1k (s)", 3),
    Row("gc", "gc evicting 10% (s)", 2),
    Row("gccpu", "gc evicting 10%: CPU, start-up included (s)", 2),
)
GOALS = {"blob50": "<= 1.2", "man50": "<= 1.2", "start": "< 2 s at 100k"}


def metric(key: str, size: int) -> mm.Metric:
    return mm.Metric(f"9-{key}-{size}", key)


def _started(proxy: ProxyProcess) -> float:
    """Seconds from process start until ``/v2/`` answers."""
    started = time.perf_counter()
    proxy.start(READY_TIMEOUT)
    with httpx.Client(timeout=5) as client:
        while client.get(proxy.url + "/v2/").status_code != 200:
            time.sleep(0.01)
    return time.perf_counter() - started


def _heads(proxy: ProxyProcess, paths: list[str], seconds: float) -> tuple[float, float, float]:
    cpu = cpu_seconds(proxy.pid)
    result = python_head_load(proxy.url, paths, seconds=seconds, connections=CONNECTIONS)
    if result.errors:
        raise RuntimeError(f"scale: {result.errors} of {result.requests} HEADs failed")
    per_1k = (cpu_seconds(proxy.pid) - cpu) / max(1, result.requests) * 1000
    return result.p50_ms, result.p99_ms, per_1k


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _gc(cache: ScaleCache, upstream: str) -> tuple[float, float, int]:
    """(wall, CPU, blobs evicted) of ``gar-proxy gc`` with the cap at 90% of the bytes."""
    cap = str(cache.blob_bytes * 9 // 10)
    started, cpu = time.perf_counter(), _children_cpu()
    done = run_cli(cache.root, upstream, "gc", env={**ENV, "GAR_PROXY_CACHE_MAX_SIZE": cap})
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    evicted = re.search(r"evicted (\d+) blobs", done.stdout + done.stderr)
    if done.returncode != 0 or evicted is None:
        raise RuntimeError(f"scale: gc failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, cpu, int(evicted[1])


def measure_size(
    rig: Rig, m: mm.Measurements, size: int, tags: int, seconds: float, run: int
) -> None:
    root = rig.workdir / "scale" / str(size) / "cache"
    cache = generate(root, blobs=size, tags=tags)  # a refill after the last run's gc

    def add(key: str, value: float) -> None:
        m.add(metric(key, size), mm.GAR, value)

    add("gen", cache.seconds)
    proxy = ProxyProcess(root, rig.relay.url, env=ENV)
    try:
        first = _started(proxy)
        if run == 0:
            add("first", first)
        proxy.stop()
        add("start", _started(proxy))
        add("startcpu", cpu_seconds(proxy.pid))
        add("rss0", proxy.rss() / MiB)
        rig.relay.reset()
        picker = random.Random(size)
        for prefix, paths in (("blob", cache.blob_paths), ("man", cache.tag_paths)):
            p50, p99, cpu = _heads(proxy, picker.sample(paths, min(SAMPLE, len(paths))), seconds)
            add(prefix + "50", p50)
            add(prefix + "99", p99)
            add(prefix + "cpu", cpu)
        add("rss1", proxy.rss() / MiB)
        sent = rig.relay.counts()[0]
        if sent:
            m.notes.append(f"9: {size} blobs run {run}: {sent} bytes went upstream")
    finally:
        proxy.stop()
    gc_seconds, gc_cpu, evicted = _gc(cache, rig.relay.url)
    add("gc", gc_seconds)
    add("gccpu", gc_cpu)
    if run == 0:
        m.notes.append(f"9: gc at {size} blobs evicted {evicted} blobs")


def scale(rig: Rig, m: mm.Measurements, options: Options) -> None:
    sizes, tags = (QUICK_SIZES, QUICK_TAGS) if options.quick else (SIZES, TAGS)
    for run in range(options.runs):
        for size in sizes:
            measure_size(rig, m, size, tags, options.head_seconds, run)
    m.notes.append(f"9: {tags} tags in 100 repositories; HEADs on {CONNECTIONS} connections")


def _sizes(m: mm.Measurements) -> list[int]:
    found = {int(key.rsplit("-", 1)[1]) for key in m.samples if key.startswith("9-start-")}
    return sorted(found)


def curve(m: mm.Measurements) -> str:
    """Scenario 9 as a table: one row per measurement, one column per cache size."""
    sizes = _sizes(m)
    if not sizes:
        return ""
    head = " | ".join(f"{size // 1000}k blobs" for size in sizes)
    lines = [
        f"| scenario 9: cache size | {head} | largest/smallest | goal |",
        "|---" * (len(sizes) + 3) + "|",
    ]
    lines += list(_rows(m, sizes))
    return "\n".join(lines)


def _rows(m: mm.Measurements, sizes: list[int]) -> Iterator[str]:
    for row in ROWS:
        stats = [m.stats(metric(row.key, size), mm.GAR) for size in sizes]
        cells = [s.cell(row.digits) if s else "-" for s in stats]
        low, high = stats[0], stats[-1]
        ratio = f"{high.median / low.median:.2f}" if low and high and low.median else "-"
        yield f"| 9 {row.label} | {' | '.join(cells)} | {ratio} | {GOALS.get(row.key, '')} |"


report.EXTRA_TABLES.append(curve)
