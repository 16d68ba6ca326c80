"""Samples by metric and target, their medians, and the goals the ratios must meet::

m = Measurements()
m.add(WARM_PULL, "gar-proxy", 0.41)
m.stats(WARM_PULL, "gar-proxy")      # Stats(median, low, high, n)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

GAR, DIST, DIRECT = "gar-proxy", "distribution", "upstream"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool = False


@dataclass(frozen=True)
class Check:
    """A goal: ``gar/dist``, ``gar/upstream`` or gar's own value against a bound."""

    metric: Metric
    against: str  # DIST, DIRECT, or "" for gar's absolute value
    bound: float
    at_most: bool

    def describe(self) -> str:
        what = {DIST: "gar/dist", DIRECT: "gar/upstream", "": "gar"}[self.against]
        return f"{what} {'<=' if self.at_most else '>='} {self.bound:g}"


COLD_PULL = Metric("1-cold", "1 cold pull, 1 client (s)")
COLD_CPU = Metric("1-cold-cpu", "1 cold pull: server CPU (s)")
COLD_CLIENT_CPU = Metric("1-cold-client", "1 cold pull: client CPU (s)")
COLD_ALL_CPU = Metric("1-cold-all", "1 cold pull: CPU of client+server+relay+upstream (s)")
WARM_PULL = Metric("2-warm", "2 warm pull, 1 client (s)")
WARM_CPU = Metric("2-warm-cpu", "2 warm pull: server CPU (s)")
WARM_UPSTREAM = Metric("2-warm-up", "2 warm pull: upstream bytes (KiB)")
HERD_WALL = Metric("3-herd", "3 8 concurrent cold pulls: wall (s)")
HERD_BYTES = Metric("3-herd-bytes", "3 8 concurrent cold pulls: upstream bytes / image")
HERD_CPU = Metric("3-herd-cpu", "3 8 concurrent cold pulls: server CPU (s)")
HERD_RSS = Metric("3-herd-rss", "3 8 concurrent cold pulls: peak RSS (MiB)")
BLOB_1 = Metric("4-blob-1", "4 warm big blob, 1 client (MB/s)", higher_is_better=True)
BLOB_4 = Metric("4-blob-4", "4 warm big blob, 4 clients (MB/s)", higher_is_better=True)
BLOB_CPU = Metric("4-blob-cpu", "4 warm big blob: server CPU per GiB (s)")
BLOB_RSS = Metric("4-blob-rss", "4 big blob, cold fill + warm reads: peak RSS (MiB)")
HEAD_RATE = Metric("5-head", "5 manifest HEAD by tag, 64 conns (req/s)", higher_is_better=True)
HEAD_P50 = Metric("5-head-p50", "5 manifest HEAD p50 (ms)")
HEAD_P99 = Metric("5-head-p99", "5 manifest HEAD p99 (ms)")
HEAD_CPU = Metric("5-head-cpu", "5 manifest HEAD: server CPU per 1k req (s)")
PEAK_RSS = Metric("6-rss", "6 peak RSS during 3-4 (MiB)")
FILL_WALL = Metric("7-fill", "7 cold big blob fill, curl (s)")
FILL_CPU = Metric("7-fill-cpu", "7 cold big blob fill: server CPU per GiB, until stored (s)")
FILL_STORED = Metric("7-fill-stored", "7 cold big blob fill: until stored in the proxy (s)")
FILL_BYTES = Metric("7-fill-bytes", "7 cold big blob fill: upstream bytes / blob")
TTFB_MANIFEST = Metric("10-ttfb-manifest", "10 cold manifest by tag: time to first byte (ms)")
TTFB_BLOB = Metric("10-ttfb-blob", "10 cold blob (largest layer): time to first byte (ms)")
PUSH_BIG = Metric("11-push-big", "11 push of bench/big (5 layers), skopeo (s)")
PUSH_BIG_CPU = Metric("11-push-big-cpu", "11 push of bench/big: server CPU (s)")
PUSH_BIG_BYTES = Metric("11-push-big-bytes", "11 push of bench/big: upstream bytes / image")
PUSH_HUGE = Metric("11-push-huge", "11 push of bench/huge (1 layer), skopeo (s)")
PUSH_HUGE_CPU = Metric("11-push-huge-cpu", "11 push of bench/huge: server CPU (s)")
PUSH_HUGE_BYTES = Metric("11-push-huge-bytes", "11 push of bench/huge: upstream bytes / image")


def tls_key(key: str) -> str:
    return f"{key}@tls"


def over_tls(metric: Metric) -> Metric:
    """The same figure with the upstream reached over HTTPS (``--upstream-tls``)."""
    return Metric(tls_key(metric.key), f"{metric.label} [TLS upstream]", metric.higher_is_better)


CHECKS = (
    Check(COLD_PULL, DIRECT, 1.15, at_most=True),
    Check(WARM_PULL, DIST, 1.0, at_most=True),
    Check(HERD_BYTES, "", 1.05, at_most=True),
    Check(HERD_WALL, DIST, 0.8, at_most=True),
    Check(BLOB_1, DIST, 1.0, at_most=False),
    Check(BLOB_4, DIST, 1.0, at_most=False),
    Check(HEAD_RATE, DIST, 3.0, at_most=False),
    Check(PEAK_RSS, "", 150.0, at_most=True),
    Check(FILL_WALL, DIST, 1.0, at_most=True),
    Check(FILL_CPU, DIST, 1.0, at_most=True),
    Check(PUSH_BIG, DIRECT, 1.15, at_most=True),
    Check(PUSH_BIG_BYTES, DIRECT, 1.01, at_most=True),
    Check(PUSH_HUGE, DIRECT, 1.15, at_most=True),
    Check(PUSH_HUGE_BYTES, DIRECT, 1.01, at_most=True),
)


@dataclass(frozen=True)
class Stats:
    median: float
    low: float
    high: float
    n: int

    def cell(self, digits: int) -> str:
        text = f"{self.median:.{digits}f}"
        if self.n > 1 and self.low != self.high:
            text += f" ({self.low:.{digits}f}-{self.high:.{digits}f})"
        return text


@dataclass
class Measurements:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # a scenario's own, e.g. 8's setups

    def add(self, metric: Metric, target: str, value: float) -> None:
        self.samples.setdefault(metric.key, {}).setdefault(target, []).append(value)

    def stats(self, metric: Metric, target: str) -> Stats | None:
        values = self.samples.get(metric.key, {}).get(target)
        if not values:
            return None
        return Stats(statistics.median(values), min(values), max(values), len(values))

    def ratio(self, metric: Metric, against: str) -> float | None:
        mine, theirs = self.stats(metric, GAR), self.stats(metric, against)
        if mine is None or theirs is None or theirs.median == 0:
            return None
        return mine.median / theirs.median

    def verdict(self, check: Check) -> tuple[float | None, bool | None]:
        if check.against:
            value = self.ratio(check.metric, check.against)
        else:
            stats = self.stats(check.metric, GAR)
            value = stats.median if stats else None
        if value is None:
            return None, None
        return value, value <= check.bound if check.at_most else value >= check.bound
