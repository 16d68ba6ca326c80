"""Scenario 7: a cold fill of the big blob, read once by curl through an empty cache.

The same blob scenario 4 reads warm (1 GiB; 128 MiB with ``--quick``), read once per
run through gar-proxy and the distribution proxy, each restarted on empty storage
first, and from the upstream directly; targets alternate in order from run to run.
Reported: wall time of the read, and the server's CPU per GiB from ``/proc`` (the
steadier figure on a shared machine). The upstream's row is its own CPU serving it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench import measure as mm
from bench.load import parallel_blob_reads
from bench.procstat import cpu_seconds

if TYPE_CHECKING:
    from bench.rig import Rig
    from bench.scenarios import Options


def cold_fill(rig: Rig, m: mm.Measurements, options: Options) -> None:
    from bench.scenarios import profiled  # scenarios imports this module

    image = rig.corpus.huge
    layer = image.blobs[1]
    gib = layer.size / 1024**3
    for run in range(options.runs):
        targets = rig.targets if run % 2 == 0 else tuple(reversed(rig.targets))
        for target in targets:
            target.fresh()
            url = f"{target.url}/v2/{image.repo}/blobs/{layer.digest}"
            with profiled(rig, target, options, f"7-fill-{run}"):
                cpu = cpu_seconds(target.pid)
                seconds = parallel_blob_reads(url, layer.size, 1)
                cpu = cpu_seconds(target.pid) - cpu
            m.add(mm.FILL_WALL, target.name, seconds)
            m.add(mm.FILL_CPU, target.name, cpu / gib)
