"""The six scenarios. Each runs ``runs`` times, alternating the order of the targets
(gar-proxy, distribution, upstream) from run to run; cold runs restart each proxy on
empty storage first. Results go into a ``Measurements``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import measure as mm
from bench.client import (
    ACCEPT,
    PULL_TIMEOUT,
    BenchError,
    new_client,
    pull_image,
    read_blob,
    run_async,
)
from bench.coldfill import cold_fill
from bench.content import ImageRef
from bench.latency import cold_latency
from bench.load import head_load, parallel_blob_reads
from bench.procstat import Memory, cpu_seconds
from bench.rig import Rig
from bench.scale import scale
from bench.servers import ROOT, Target

MiB = 1024 * 1024
HERD = 8
HEAD_CONNECTIONS = 64


@dataclass
class Options:
    runs: int
    head_seconds: float
    py_spy: Path | None = None  # record gar-proxy profiles of the warm scenarios here
    py_spy_format: str = "flamegraph"  # or raw (collapsed stacks), speedscope
    quick: bool = False  # --quick: scenarios with a size axis cap it


def alternate(targets: Sequence[Target], run: int) -> list[Target]:
    return list(targets) if run % 2 == 0 else list(reversed(targets))


@dataclass
class Pulled:
    seconds: float
    upstream_bytes: int
    cpu: float
    peak_rss: int


def pull_many(rig: Rig, target: Target, image: ImageRef, pullers: int) -> Pulled:
    """``pullers`` simultaneous pulls of ``image``: one in this process, several each in
    its own process (``bench.puller``), timed from the go signal to the last byte."""
    if pullers == 1:

        async def one() -> list[int]:
            async with new_client(verify=rig.client_verify) as client:
                return [await pull_image(client, target.url, image.repo, image.tag)]

        start: Callable[[], list[int]] = lambda: run_async(one())  # noqa: E731
    else:
        start = _processes(target, image, pullers, rig.tls.ca if rig.tls else None)
    rig.relay.reset()
    cpu = cpu_seconds(target.pid)
    with Memory(target.pid) as memory:
        started = time.perf_counter()
        received = start()
        seconds = time.perf_counter() - started
    if received != [image.blob_bytes] * pullers:
        raise BenchError(f"{target.name}: pulled {received}, expected {image.blob_bytes} each")
    return Pulled(seconds, rig.relay.counts()[1], cpu_seconds(target.pid) - cpu, memory.peak)


def _processes(
    target: Target, image: ImageRef, count: int, ca_file: Path | None = None
) -> Callable[[], list[int]]:
    """Start ``count`` pullers, wait until each is ready; the callable sets them off."""
    command = [sys.executable, "-m", "bench.puller", target.url, image.repo, image.tag]
    command += [str(ca_file)] if ca_file else []
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise BenchError(f"puller {proc.pid} did not start")

    def go() -> list[int]:
        try:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            received = []
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().split()
                if proc.wait(PULL_TIMEOUT) != 0 or len(line) != 2:
                    raise BenchError(f"puller {proc.pid} failed")
                received.append(int(line[1]))
            return received
        finally:
            for proc in procs:  # their pipes, closed now rather than at collection
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    return go


@contextlib.contextmanager
def profiled(rig: Rig, target: Target, options: Options, name: str) -> Iterator[None]:
    """py-spy on gar-proxy while the block runs, when ``--py-spy DIR`` asked for it."""
    if options.py_spy is None or target is not rig.gar or target.pid is None:
        yield
        return
    options.py_spy.mkdir(parents=True, exist_ok=True)
    suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[options.py_spy_format]
    output = options.py_spy / f"{name}.{suffix}"
    spy = subprocess.Popen(
        [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record",
         "--nonblocking", "-r", "200", "-f", options.py_spy_format, "--pid", str(target.pid),
         "-o", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)  # attach before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def cold_pull(rig: Rig, m: mm.Measurements, options: Options) -> None:
    image = rig.corpus.big
    for run in range(options.runs):
        for target in alternate(rig.targets, run):
            target.fresh()
            others = _pids(rig, target)
            before = time.process_time(), [cpu_seconds(pid) for pid in others]
            with profiled(rig, target, options, f"1-cold-pull-{run}"):
                pulled = pull_many(rig, target, image, 1)
            client = time.process_time() - before[0]
            rest = sum(cpu_seconds(pid) - c for pid, c in zip(others, before[1], strict=True))
            m.add(mm.COLD_PULL, target.name, pulled.seconds)
            m.add(mm.COLD_CPU, target.name, pulled.cpu)
            m.add(mm.COLD_CLIENT_CPU, target.name, client)
            m.add(mm.COLD_ALL_CPU, target.name, client + pulled.cpu + rest)


def _pids(rig: Rig, target: Target) -> list[int]:
    """The processes a pull through ``target`` also keeps busy: relay and upstream."""
    pids = [] if target is rig.direct else [rig.relay.pid, rig.direct.pid]
    return [pid for pid in pids if pid is not None]


def warm_pull(rig: Rig, m: mm.Measurements, options: Options) -> None:
    image = rig.corpus.big
    for target in rig.proxies:
        target.fresh()
        for _ in range(2):  # the second makes sure the proxy's copy is complete
            pull_many(rig, target, image, 1)
    for run in range(options.runs):
        for target in alternate(rig.targets, run):
            with profiled(rig, target, options, f"2-warm-pull-{run}"):
                pulled = pull_many(rig, target, image, 1)
            m.add(mm.WARM_PULL, target.name, pulled.seconds)
            m.add(mm.WARM_CPU, target.name, pulled.cpu)
            if target is not rig.direct:
                m.add(mm.WARM_UPSTREAM, target.name, pulled.upstream_bytes / 1024)


def herd(rig: Rig, m: mm.Measurements, options: Options) -> None:
    image = rig.corpus.big
    for run in range(options.runs):
        for target in alternate(rig.targets, run):
            target.fresh()
            try:
                pulled = pull_many(rig, target, image, HERD)
            except BenchError as error:
                if target is not rig.distribution:
                    raise
                # The reference's own race (distribution 2.8's proxy answers some
                # concurrent cold blob GETs 500 "invalid checksum digest format"): once
                # more on empty storage, and said so.
                m.notes.append(f"3: {target.name} run {run} repeated after: {error}")
                target.fresh()
                pulled = pull_many(rig, target, image, HERD)
            m.add(mm.HERD_WALL, target.name, pulled.seconds)
            m.add(mm.HERD_CPU, target.name, pulled.cpu)
            if target is not rig.direct:
                m.add(mm.HERD_BYTES, target.name, pulled.upstream_bytes / image.blob_bytes)
                m.add(mm.HERD_RSS, target.name, pulled.peak_rss / MiB)


def big_blob(rig: Rig, m: mm.Measurements, options: Options) -> None:
    image = rig.corpus.huge
    layer = image.blobs[1]

    async def read(target: Target) -> None:
        async with new_client() as client:
            await read_blob(client, target.url, image.repo, layer.digest, layer.size)

    for target in rig.proxies:
        target.fresh()
        with Memory(target.pid) as memory:
            run_async(read(target))  # the cold fill
            run_async(read(target))
        m.add(mm.BLOB_RSS, target.name, memory.peak / MiB)
    for run in range(options.runs):
        for clients, metric in ((1, mm.BLOB_1), (4, mm.BLOB_4)):
            for target in alternate(rig.targets, run):
                url = f"{target.url}/v2/{image.repo}/blobs/{layer.digest}"
                cpu = cpu_seconds(target.pid)
                with (
                    Memory(target.pid) as memory,
                    profiled(rig, target, options, f"4-blob-{clients}-{run}"),
                ):
                    seconds = parallel_blob_reads(url, layer.size, clients)
                gib = clients * layer.size / 1024**3
                m.add(metric, target.name, clients * layer.size / seconds / 1e6)
                m.add(mm.BLOB_CPU, target.name, (cpu_seconds(target.pid) - cpu) / gib)
                if target is not rig.direct:
                    m.add(mm.BLOB_RSS, target.name, memory.peak / MiB)


def manifest_heads(rig: Rig, m: mm.Measurements, options: Options) -> None:
    images = rig.corpus.small
    paths = [f"/v2/{i.repo}/manifests/{i.tag}" for i in images]

    async def warm(target: Target) -> None:
        async with new_client() as client:
            for path in paths:
                response = await client.get(target.url + path, headers={"Accept": ACCEPT})
                if response.status_code != 200:
                    raise BenchError(f"{target.name}: GET {path} -> {response.status_code}")

    for target in rig.targets:
        run_async(warm(target))
    for run in range(options.runs):
        for target in alternate(rig.targets, run):
            cpu = cpu_seconds(target.pid)
            with profiled(rig, target, options, f"5-head-{run}"):
                result = head_load(
                    target.url, paths, seconds=options.head_seconds,
                    connections=HEAD_CONNECTIONS, scratch=rig.workdir,
                )  # fmt: skip
            if result.errors:
                m.notes.append(f"5: {target.name} run {run}: {result.errors} errors")
            m.add(mm.HEAD_RATE, target.name, result.rate)
            m.add(mm.HEAD_P50, target.name, result.p50_ms)
            m.add(mm.HEAD_P99, target.name, result.p99_ms)
            cost = (cpu_seconds(target.pid) - cpu) / max(1, result.requests) * 1000
            m.add(mm.HEAD_CPU, target.name, cost)


def peak_rss(m: mm.Measurements) -> None:
    for target in (mm.GAR, mm.DIST):
        peaks = [s.high for s in (m.stats(mm.HERD_RSS, target), m.stats(mm.BLOB_RSS, target)) if s]
        if peaks:
            m.add(mm.PEAK_RSS, target, max(peaks))


def _pushes(rig: Rig, m: mm.Measurements, options: Options) -> None:
    from bench.push import pushes  # here: bench.push imports Options from this module

    pushes(rig, m, options)


def _ring(rig: Rig, m: mm.Measurements, options: Options) -> None:
    from bench.ring import ring_pulls  # here: bench.ring imports pull_many from this module

    ring_pulls(rig, m, options)


SCENARIOS = {1: cold_pull, 2: warm_pull, 3: herd, 4: big_blob, 5: manifest_heads}
SCENARIOS[7] = cold_fill
SCENARIOS[8] = _ring  # 1 replica against a ring of 3 behind nginx (bench/ring.py)
SCENARIOS[9] = scale
SCENARIOS[10] = cold_latency  # time to first byte, cold (bench/latency.py)
SCENARIOS[11] = _pushes  # skopeo pushes, through gar-proxy and direct (bench/push.py)


def skopeo_sanity(rig: Rig, m: mm.Measurements) -> None:
    """A real client through each proxy: skopeo copies the index (all platforms) and
    the big image into OCI layouts, whose digests must be the pushed ones."""
    from testkit.realclients import Skopeo

    skopeo = Skopeo(rig.workdir / "skopeo")
    for target in rig.proxies:
        host = target.url.removeprefix("http://")
        for image in (rig.corpus.multi, rig.corpus.big):
            layout = rig.workdir / "skopeo" / f"{target.name}-{image.repo.replace('/', '-')}"
            started = time.perf_counter()
            skopeo("copy", "--quiet", "--all", f"docker://{host}/{image.repo}:{image.tag}",
                   f"oci:{layout}:{image.tag}", timeout=600)  # fmt: skip
            seconds = time.perf_counter() - started
            index = json.loads((layout / "index.json").read_text())
            digests = [d["digest"] for d in index["manifests"]]
            if digests != [image.digest]:
                raise BenchError(f"skopeo via {target.name}: got {digests}, not {image.digest}")
            m.notes.append(
                f"skopeo copy --all {image.repo}:{image.tag} via {target.name}: "
                f"digest ok, {seconds:.2f}s"
            )
