"""Where a cold fill's time goes: counters of each proxy's process during scenario 7.

``python -m bench.fillprofile --workdir W`` brings up the bench's rig (``bench.rig``),
then fills the 1 GiB blob through each proxy restarted on empty storage, read once by
curl, and reads the kernel's own counters of the server process before and after,
from ``/proc/PID`` (every thread): CPU (user, system, per thread name), context
switches (voluntary, involuntary), page faults, syscalls and bytes through the
read/write family (``/proc/PID/io``). All per GiB. Counters, not wall time: they hold
on a busy machine. Then, each in a pass of its own (they slow the process they watch,
so those passes are not timed): ``--strace`` (``strace -c -f``: calls per syscall),
``--perf DIR`` (``perf record -e cpu-clock``: where CPU goes by symbol, kernel
included) and ``--py-spy DIR`` (gar-proxy, ``--native``, raw stacks)::

    python -m bench.fillprofile --workdir /tmp/gb --runs 3 --strace --perf /tmp/perf
    python -m bench.fillprofile --workdir /tmp/gb --upstream-tls

``perf stat``'s hardware events (instructions, cycles) are not available in this
machine's VM (``<not supported>``); its software events are the ``/proc`` counters.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import tls
from bench.content import PROFILES
from bench.load import parallel_blob_reads
from bench.procstat import _TICKS
from bench.rig import Rig

GiB = 1024**3


@dataclass
class Counters:
    """One process's kernel counters at one moment (all threads)."""

    user: float = 0.0
    system: float = 0.0
    minor_faults: int = 0
    major_faults: int = 0
    voluntary: int = 0
    involuntary: int = 0
    read_calls: int = 0
    write_calls: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    pid: int = 0
    threads: dict[int, float] = field(default_factory=dict)  # CPU by thread id

    @classmethod
    def of(cls, pid: int) -> Counters:
        proc = Path(f"/proc/{pid}")
        stat = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        c = cls(int(stat[11]) / _TICKS, int(stat[12]) / _TICKS, int(stat[7]), int(stat[9]))
        io = dict(line.split(": ") for line in proc.joinpath("io").read_text().splitlines())
        c.read_calls, c.write_calls = int(io["syscr"]), int(io["syscw"])
        c.read_bytes, c.write_bytes = int(io["rchar"]), int(io["wchar"])
        c.pid = pid
        for task in proc.joinpath("task").iterdir():
            with contextlib.suppress(OSError):
                fields = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
                c.threads[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
                status = task.joinpath("status").read_text()
                c.voluntary += _status_count(status, "voluntary_ctxt_switches")
                c.involuntary += _status_count(status, "nonvoluntary_ctxt_switches")
        return c

    def minus(self, before: Counters, gib: float) -> dict[str, float]:
        """What happened between ``before`` and now, per GiB."""
        row = {
            "cpu user (s)": self.user - before.user,
            "cpu system (s)": self.system - before.system,
            "minor page faults": self.minor_faults - before.minor_faults,
            "major page faults": self.major_faults - before.major_faults,
            "context switches, voluntary": self.voluntary - before.voluntary,
            "context switches, involuntary": self.involuntary - before.involuntary,
            "read-family syscalls": self.read_calls - before.read_calls,
            "write-family syscalls": self.write_calls - before.write_calls,
            "bytes read by syscalls (MiB)": (self.read_bytes - before.read_bytes) / 2**20,
            "bytes written by syscalls (MiB)": (self.write_bytes - before.write_bytes) / 2**20,
        }
        spent = {tid: cpu - before.threads.get(tid, 0.0) for tid, cpu in self.threads.items()}
        row["cpu of the main thread (s)"] = spent.pop(self.pid, 0.0)
        others = sorted(spent.values(), reverse=True)
        for rank, seconds in enumerate(others[:3], 1):
            row[f"cpu of the busiest other thread #{rank} (s)"] = seconds
        row["cpu of all other threads (s)"] = sum(others)
        return {key: value / gib for key, value in row.items()}


def _status_count(status: str, name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+)", status, re.M)
    return int(match[1]) if match else 0


@contextlib.contextmanager
def attached(command: list[str], settle: float = 0.5) -> Iterator[None]:
    """A tracer or profiler attached while the block runs, stopped with SIGINT."""
    tool = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(settle)  # attached before the load starts
    try:
        yield
    finally:
        tool.send_signal(signal.SIGINT)
        try:
            tool.wait(60)
        except subprocess.TimeoutExpired:
            tool.kill()
            tool.wait()


def counted(rig: Rig, runs: int, settle: float = 0.0) -> dict[str, list[dict[str, float]]]:
    image = rig.corpus.huge
    layer = image.blobs[1]
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run in range(runs):
        targets = rig.proxies if run % 2 == 0 else tuple(reversed(rig.proxies))
        for target in targets:
            target.fresh()
            time.sleep(settle)
            assert target.pid is not None
            url = f"{target.url}/v2/{image.repo}/blobs/{layer.digest}"
            before = Counters.of(target.pid)
            seconds = parallel_blob_reads(url, layer.size, 1)
            row = Counters.of(target.pid).minus(before, layer.size / GiB)
            row["wall (s, not quiet)"] = seconds * GiB / layer.size
            rows[target.name].append(row)
    return rows


def traced(rig: Rig, out: Path, strace: bool, perf: bool, spy: bool) -> list[str]:
    """One fill per proxy under each tool asked for; the files they wrote."""
    image = rig.corpus.huge
    layer = image.blobs[1]
    written = []
    out.mkdir(parents=True, exist_ok=True)
    for target in rig.proxies:
        tools: list[tuple[str, list[str]]] = []
        if strace:
            tools.append(("strace.txt", ["strace", "-c", "-f", "-o"]))
        if perf:
            tools.append(("perf.data", ["perf", "record", "-e", "cpu-clock", "-F", "1999", "-g",
                                        "-o"]))  # fmt: skip
        if spy and target is rig.gar:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            # --native cannot be --nonblocking: py-spy stops the process per sample.
            tools.append(("py-spy.txt", [py_spy, "record", "--native", "-r", "200", "-f",
                                         "raw", "-o"]))  # fmt: skip
        for suffix, command in tools:
            target.fresh()
            path = out / f"{target.name}-{suffix}"
            url = f"{target.url}/v2/{image.repo}/blobs/{layer.digest}"
            with attached([*command, str(path), "-p" if "py-spy" not in command[0] else "--pid",
                           str(target.pid)]):  # fmt: skip
                parallel_blob_reads(url, layer.size, 1)
            written.append(str(path))
    return written


def report(rows: dict[str, list[dict[str, float]]]) -> str:
    names = list(rows)
    keys: list[str] = []
    for per_run in rows.values():
        for row in per_run:
            keys += [k for k in row if k not in keys]
    lines = ["| per GiB (median of runs) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]  # fmt: skip
    for key in keys:
        cells = []
        for name in names:
            values = [row.get(key, 0.0) for row in rows[name]]
            median = statistics.median(values)
            cells.append(f"{median:.3f}" if median < 100 else f"{median:,.0f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fillprofile", description=__doc__)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="the 128 MiB blob")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--upstream-tls", action="store_true", help="the HTTPS upstream instead")
    p.add_argument("--strace", action="store_true", help="strace -c -f, a pass of its own")
    p.add_argument("--perf", action="store_true", help="perf record -e cpu-clock -g")
    p.add_argument("--py-spy", action="store_true", help="py-spy --native of gar-proxy")
    p.add_argument("--settle", type=float, default=0.0, help="seconds between restart and fill")
    p.add_argument("--out", type=Path, help="where the tools write (default WORKDIR/profile)")
    args = p.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    with Rig.up(args.workdir, profile) as plain, contextlib.ExitStack() as stack:
        rig = stack.enter_context(tls.tls_rig(plain)) if args.upstream_tls else plain
        if args.runs:
            print(report(counted(rig, args.runs, args.settle)))
        if args.strace or args.perf or args.py_spy:
            out = args.out or args.workdir / "profile"
            for path in traced(rig, out, args.strace, args.perf, args.py_spy):
                print(f"- {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
