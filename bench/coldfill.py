"""Scenario 7: a cold fill of the big blob, read once by curl through an empty cache.

The same blob scenario 4 reads warm (1 GiB; 128 MiB with ``--quick``), read once per
run through gar-proxy and the distribution proxy, each restarted on empty storage
first, and from the upstream directly; targets alternate in order from run to run.

A fill is over when the blob is in the proxy's own storage, not when the client has
its last byte: the distribution proxy (2.8) answers a cold blob from one upstream
download, relayed to the client unverified, and stores it from a second download in
the background, which goes on after the client is done (``bench/RESULTS.md``, issue
24). So the server's CPU is counted until the blob is stored, and the upstream bytes
(the relay's count) and the time until stored are reported beside the client's wall
time. gar-proxy stores before it sends the last byte, so for it both times agree.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bench import measure as mm
from bench.client import BenchError
from bench.load import parallel_blob_reads
from bench.procstat import cpu_seconds

if TYPE_CHECKING:
    from bench.rig import Rig
    from bench.scenarios import Options
    from bench.servers import Target

STORED_TIMEOUT = 300.0
POLL = 0.02


def wait_stored(target: Target, digest: str) -> None:
    deadline = time.monotonic() + STORED_TIMEOUT
    while not target.stored(digest):
        if time.monotonic() > deadline:
            raise BenchError(f"{target.name}: {digest} not stored {STORED_TIMEOUT:g}s after")
        time.sleep(POLL)


def cold_fill(rig: Rig, m: mm.Measurements, options: Options) -> None:
    from bench.scenarios import profiled  # scenarios imports this module

    image = rig.corpus.huge
    layer = image.blobs[1]
    gib = layer.size / 1024**3
    ca = rig.tls.ca if rig.tls else None  # only the direct target is HTTPS then
    for run in range(options.runs):
        targets = rig.targets if run % 2 == 0 else tuple(reversed(rig.targets))
        for target in targets:
            target.fresh()
            url = f"{target.url}/v2/{image.repo}/blobs/{layer.digest}"
            rig.relay.reset()
            with profiled(rig, target, options, f"7-fill-{run}"):
                cpu = cpu_seconds(target.pid)
                started = time.perf_counter()
                seconds = parallel_blob_reads(url, layer.size, 1, ca)
                wait_stored(target, layer.digest)
                stored = time.perf_counter() - started
                cpu = cpu_seconds(target.pid) - cpu
            m.add(mm.FILL_WALL, target.name, seconds)
            m.add(mm.FILL_CPU, target.name, cpu / gib)
            if target is not rig.direct:
                m.add(mm.FILL_STORED, target.name, stored)
                m.add(mm.FILL_BYTES, target.name, rig.relay.counts()[1] / layer.size)
