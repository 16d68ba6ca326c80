"""Scenario 8: one gar-proxy replica against a ring of three behind Debian's nginx.

The ring is deploy/ring/nginx.conf itself (``hash $ring_key consistent``: a blob by
its digest, everything else by repository), its server lines replaced by three
replicas on loopback (``testkit.ring``), each with its own empty cache per run. Every
replica's upstream is the rig's counting relay, so upstream bytes are counted on the
wire for the whole ring; upstream requests are the replicas' own count of upstream
calls (``garproxy_upstream_request_duration_seconds_count`` on each ``/metrics``).

Each run, for each setup (the order alternating): restart on empty caches, ``HERD``
concurrent cold pulls of ``bench/big`` (each puller its own process; fewer with
``--quick``, each being a Python start-up), one pull that lets the fills settle, then
as many concurrent warm pulls. Server CPU is the sum over the replicas and nginx's
master and workers. The single replica is pulled from directly (no nginx): the
comparison is what a team gets by adding the ring.
"""

from __future__ import annotations

import os
import re

import httpx

from bench import measure as mm
from bench.content import ImageRef
from bench.procstat import cpu_seconds
from bench.rig import Rig
from bench.scenarios import HERD, Options, pull_many
from bench.servers import GarProxy
from testkit.ring import Nginx

REPLICAS = 3
PULLERS = {"full": HERD, "quick": 4, "smoke": 2}  # by profile: each is a Python start-up
SINGLE, RING = "1 replica", f"ring of {REPLICAS}"
_REQUESTS = re.compile(r"(?m)^garproxy_upstream_request_duration_seconds_count\{.*\} (\S+)$")
_BYTES = re.compile(r"(?m)^garproxy_upstream_bytes_fetched_total (\S+)$")

COLD_WALL = mm.Metric("8-cold", "8 cold pull, concurrent: wall (s)")
COLD_REQUESTS = mm.Metric("8-cold-req", "8 cold pull: upstream requests")
COLD_BYTES = mm.Metric("8-cold-bytes", "8 cold pull: upstream bytes / image")
COLD_SHARE = mm.Metric("8-cold-share", "8 cold pull: largest replica's share of upstream bytes")
COLD_CPU = mm.Metric("8-cold-cpu", "8 cold pull: server CPU, replicas + nginx (s)")
COLD_NGINX = mm.Metric("8-cold-nginx", "8 cold pull: of which nginx (s)")
WARM_WALL = mm.Metric("8-warm", "8 warm pull, concurrent: wall (s)")
WARM_REQUESTS = mm.Metric("8-warm-req", "8 warm pull: upstream requests")
WARM_BYTES = mm.Metric("8-warm-bytes", "8 warm pull: upstream bytes (KiB)")
WARM_CPU = mm.Metric("8-warm-cpu", "8 warm pull: server CPU, replicas + nginx (s)")
WARM_NGINX = mm.Metric("8-warm-nginx", "8 warm pull: of which nginx (s)")
ROWS = (
    COLD_WALL, COLD_REQUESTS, COLD_BYTES, COLD_SHARE, COLD_CPU, COLD_NGINX,
    WARM_WALL, WARM_REQUESTS, WARM_BYTES, WARM_CPU, WARM_NGINX,
)  # fmt: skip


class Setup:
    """Replicas, behind nginx or (one replica) not; a ``Target`` for ``pull_many``
    whose ``pid`` is None: CPU is summed over ``pids()`` here instead."""

    def __init__(self, name: str, replicas: list[GarProxy], nginx: Nginx | None) -> None:
        self.name, self.replicas, self.nginx = name, replicas, nginx

    @property
    def url(self) -> str:
        return self.nginx.url if self.nginx is not None else self.replicas[0].url

    @property
    def pid(self) -> int | None:
        return None

    def fresh(self) -> None:
        """Every replica restarted on an empty cache; nginx restarted over their new
        ports (it resolves its servers once, at start)."""
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:  # not on threads: a replica dies with the thread
            replica.fresh()  # that started it (its parent-death signal is per thread)
        if self.nginx is not None:
            self.nginx.start([r.url for r in self.replicas])

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            replica.stop()

    def stored(self, digest: str) -> bool:
        return any(replica.stored(digest) for replica in self.replicas)

    def pids(self) -> list[int]:
        pids = [r.pid for r in self.replicas if r.pid is not None]
        return pids + (self.nginx.pids() if self.nginx is not None else [])

    def upstream(self) -> tuple[int, list[float]]:
        """Upstream calls made so far by all replicas; blob bytes each one fetched."""
        requests, fetched = 0, []
        for replica in self.replicas:
            text = httpx.get(replica.url + "/metrics", timeout=10).raise_for_status().text
            requests += sum(int(float(n)) for n in _REQUESTS.findall(text))
            fetched.append(sum(float(n) for n in _BYTES.findall(text)))
        return requests, fetched


def pullers(rig: Rig) -> int:
    return PULLERS.get(rig.profile.name, HERD)


def _pull(rig: Rig, setup: Setup, image: ImageRef, cold: bool, m: mm.Measurements) -> None:
    """Concurrent pulls through ``setup``, recorded under its name."""
    requests, fetched = setup.upstream()
    cpu = {pid: cpu_seconds(pid) for pid in setup.pids()}
    pulled = pull_many(rig, setup, image, pullers(rig))
    used = {pid: cpu_seconds(pid) - before for pid, before in cpu.items()}
    requests_after, fetched_after = setup.upstream()
    cpu_used = sum(used.values())
    if setup.nginx is not None:
        nginx = sum(used.get(pid, 0.0) for pid in setup.nginx.pids())
        m.add(COLD_NGINX if cold else WARM_NGINX, setup.name, nginx)
    if cold:
        share = [after - before for after, before in zip(fetched_after, fetched, strict=True)]
        m.add(COLD_WALL, setup.name, pulled.seconds)
        m.add(COLD_REQUESTS, setup.name, requests_after - requests)
        m.add(COLD_BYTES, setup.name, pulled.upstream_bytes / image.blob_bytes)
        m.add(COLD_SHARE, setup.name, max(share) / max(1.0, sum(share)))
        m.add(COLD_CPU, setup.name, cpu_used)
    else:
        m.add(WARM_WALL, setup.name, pulled.seconds)
        m.add(WARM_REQUESTS, setup.name, requests_after - requests)
        m.add(WARM_BYTES, setup.name, pulled.upstream_bytes / 1024)
        m.add(WARM_CPU, setup.name, cpu_used)


def ring_pulls(rig: Rig, m: mm.Measurements, options: Options) -> None:
    image = rig.corpus.big
    root = rig.workdir / "ring"
    replicas = [GarProxy(root / f"r{n}", rig.relay.url) for n in range(REPLICAS)]
    setups = [Setup(SINGLE, [rig.gar], None), Setup(RING, replicas, Nginx(root / "nginx"))]
    try:
        for run in range(options.runs):
            for setup in setups if run % 2 == 0 else setups[::-1]:
                setup.fresh()
                _pull(rig, setup, image, True, m)
                pull_many(rig, setup, image, 1)  # the fills settled: every copy complete
                _pull(rig, setup, image, False, m)
    finally:
        setups[1].stop()  # the rig stops its own gar-proxy
    m.tables.append(table(m, pullers(rig)))


def _cell(m: mm.Measurements, metric: mm.Metric, target: str) -> str:
    stats = m.stats(metric, target)
    if stats is None:
        return "-"
    digits = 0 if abs(stats.median) >= 100 else 2 if abs(stats.median) >= 1 else 3
    if metric in (COLD_REQUESTS, WARM_REQUESTS) and float(stats.median).is_integer():
        digits = 0  # a count
    return stats.cell(digits)


def _ratio(m: mm.Measurements, metric: mm.Metric) -> str:
    ring, single = m.stats(metric, RING), m.stats(metric, SINGLE)
    if ring is None or single is None or single.median == 0:
        return "-"
    return f"{ring.median / single.median:.2f}"


def table(m: mm.Measurements, concurrent: int) -> str:
    """Scenario 8's own table: its columns are the two setups, not the proxies."""
    lines = [
        f"| scenario 8: {concurrent} pullers, {os.cpu_count()} cores | {SINGLE} "
        f"| {RING} behind nginx | ring/1 |",
        "|---|---|---|---|",
    ]
    for metric in ROWS:
        if metric.key in m.samples:
            lines.append(
                f"| {metric.label} | {_cell(m, metric, SINGLE)} | {_cell(m, metric, RING)} "
                f"| {_ratio(m, metric)} |"
            )
    return "\n".join(lines)
