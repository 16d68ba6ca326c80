"""Where a push's CPU goes: every process a ``skopeo copy`` of ``bench/huge`` keeps busy.

``python -m bench.pushprofile --workdir W`` brings up the bench's rig (``bench.rig``)
and pushes the 1 GiB single-layer image (scenario 11's ``bench/huge``) from its OCI
layout to a new repository upstream, through gar-proxy and directly, ``--runs`` times
each in alternating order, and reads the kernel's counters before and after: gar-proxy's
own (``bench.fillprofile.Counters``: CPU per thread, context switches, page faults,
read/write syscalls and bytes), and the CPU of the upstream registry, of the counting
relay and of skopeo (``getrusage`` of children). All per pushed GiB. Then, each in a
pass of its own (they slow the process they watch, so those passes are not timed),
``--strace`` (``strace -c -f`` of gar-proxy), ``--perf`` (``perf record -e cpu-clock``)
and ``--py-spy`` (``--native``, raw stacks)::

    python -m bench.pushprofile --workdir /tmp/gb --runs 3 --strace --py-spy
    python -m bench.pushprofile --workdir /tmp/gb --upstream-tls
    python -m bench.pushprofile --workdir /tmp/gb --env GAR_PROXY_TRANSPORT_LEAN_BODIES=false

``--env NAME=VALUE`` starts gar-proxy with that setting (an A/B of a switch).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench import tls
from bench.content import PROFILES, ImageRef
from bench.fillprofile import Counters, GiB, attached, report
from bench.procstat import cpu_seconds
from bench.push import _certs, _push, layout
from bench.rig import Rig
from bench.servers import GarProxy, Relay
from testkit.realclients import Skopeo

_serial = 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _repo(image: ImageRef) -> str:
    global _serial
    _serial += 1
    return f"bench/profile-{image.repo.rsplit('/', 1)[-1]}-{_serial}-{time.time_ns()}"


def push_counted(
    rig: Rig, skopeo: Skopeo, source: str, image: ImageRef, *, through_gar: bool
) -> dict[str, float]:
    """One push to a new repository: counters of every busy process, per pushed GiB."""
    gib = image.blob_bytes / GiB
    if through_gar:
        rig.gar.fresh()
        relay, host, certs = rig.relay, rig.gar.url.split("://", 1)[1], None
    else:
        scheme = "https" if rig.tls else "http"
        relay = Relay(rig.upstream.host, rig.workdir / "push-relay.log", scheme).start()
        host, certs = relay.url.split("://", 1)[1], _certs(rig) if rig.tls else None
    upstream_pid = rig.direct.pid
    try:
        relay.reset()
        gar_before = Counters.of(rig.gar.pid) if through_gar and rig.gar.pid else None
        up_before, relay_before = cpu_seconds(upstream_pid), cpu_seconds(relay.pid)
        children = _children_cpu()
        seconds = _push(skopeo, source, host, _repo(image), certs)
        row: dict[str, float] = {}
        if gar_before is not None:
            assert rig.gar.pid is not None
            row = Counters.of(rig.gar.pid).minus(gar_before, gib)
            row["gar-proxy cpu (s)"] = row["cpu user (s)"] + row["cpu system (s)"]
        row["skopeo cpu (s)"] = (_children_cpu() - children) / gib
        row["upstream registry cpu (s)"] = (cpu_seconds(upstream_pid) - up_before) / gib
        row["relay cpu (s)"] = (cpu_seconds(relay.pid) - relay_before) / gib
        row["upstream bytes / image"] = relay.counts()[0] / image.blob_bytes
    finally:
        if relay is not rig.relay:
            relay.stop()
    busy = ("gar-proxy cpu (s)", "skopeo cpu (s)", "upstream registry cpu (s)", "relay cpu (s)")
    row["cpu of all processes (s)"] = sum(row.get(key, 0.0) for key in busy)
    row["wall (s, not quiet)"] = seconds / gib
    return row


def counted(rig: Rig, skopeo: Skopeo, runs: int) -> dict[str, list[dict[str, float]]]:
    image = rig.corpus.huge
    source = layout(rig, skopeo, image)
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for run in range(runs):
        for through_gar in (True, False) if run % 2 == 0 else (False, True):
            name = "through gar-proxy" if through_gar else "direct"
            rows[name].append(push_counted(rig, skopeo, source, image, through_gar=through_gar))
    return rows


def traced(rig: Rig, skopeo: Skopeo, out: Path, strace: bool, perf: bool, spy: bool) -> list[str]:
    """One push through gar-proxy under each tool asked for; the files they wrote."""
    image = rig.corpus.huge
    source = layout(rig, skopeo, image)
    out.mkdir(parents=True, exist_ok=True)
    tools: list[tuple[str, list[str], str]] = []
    if strace:
        tools.append(("strace.txt", ["strace", "-c", "-f", "-o"], "-p"))
    if perf:
        command = ["perf", "record", "-e", "cpu-clock", "-F", "1999", "-g", "-o"]
        tools.append(("perf.data", command, "-p"))
    if spy:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        # --native cannot be --nonblocking: py-spy stops the process per sample.
        command = [py_spy, "record", "--native", "-r", "200", "-f", "raw", "-o"]
        tools.append(("py-spy.txt", command, "--pid"))
    written = []
    tag = "tls-" if rig.tls else ""
    for suffix, command, pid_flag in tools:
        rig.gar.fresh()
        path = out / f"push-{tag}{suffix}"
        with attached([*command, str(path), pid_flag, str(rig.gar.pid)]):
            _push(skopeo, source, rig.gar.url.split("://", 1)[1], _repo(image), None)
        written.append(str(path))
    return written


def _with_env(rig: Rig, env: dict[str, str]) -> None:
    """Restart the rig's gar-proxy with ``env`` added (a setting under test)."""
    if not env:
        return
    rig.gar.stop()
    old = rig.gar.process
    rig.gar.process = GarProxy(rig.gar.workdir, old.upstream, env={**old.env, **env}).process
    rig.gar.start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pushprofile", description=__doc__)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--upstream-tls", action="store_true", help="the HTTPS upstream instead")
    p.add_argument("--strace", action="store_true", help="strace -c -f, a pass of its own")
    p.add_argument("--perf", action="store_true", help="perf record -e cpu-clock -g")
    p.add_argument("--py-spy", action="store_true", help="py-spy --native of gar-proxy")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for gar-proxy")
    p.add_argument("--out", type=Path, help="where the tools write (default WORKDIR/profile)")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    with Rig.up(args.workdir, PROFILES["full"]) as plain, contextlib.ExitStack() as stack:
        rig = stack.enter_context(tls.tls_rig(plain)) if args.upstream_tls else plain
        _with_env(rig, env)
        skopeo = Skopeo(rig.workdir / "skopeo-push")
        if args.runs:
            print(report(counted(rig, skopeo, args.runs)))
        if args.strace or args.perf or args.py_spy:
            out = args.out or args.workdir / "profile"
            for path in traced(rig, skopeo, out, args.strace, args.perf, args.py_spy):
                print(f"- {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
