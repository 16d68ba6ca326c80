"""The results as a Markdown table (medians with min-max), ratios and goals met."""

from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import measure as mm

ROWS = (
    mm.COLD_PULL, mm.COLD_CPU, mm.COLD_CLIENT_CPU, mm.COLD_ALL_CPU,
    mm.WARM_PULL, mm.WARM_CPU, mm.WARM_UPSTREAM,
    mm.HERD_WALL, mm.HERD_BYTES, mm.HERD_CPU, mm.HERD_RSS,
    mm.BLOB_1, mm.BLOB_4, mm.BLOB_CPU, mm.BLOB_RSS,
    mm.HEAD_RATE, mm.HEAD_P50, mm.HEAD_P99, mm.HEAD_CPU, mm.PEAK_RSS,
    mm.FILL_WALL, mm.FILL_CPU, mm.FILL_STORED, mm.FILL_BYTES,
    mm.TTFB_MANIFEST, mm.TTFB_BLOB,
    mm.PUSH_BIG, mm.PUSH_BIG_CPU, mm.PUSH_BIG_BYTES,
    mm.PUSH_HUGE, mm.PUSH_HUGE_CPU, mm.PUSH_HUGE_BYTES,
)  # fmt: skip


# Scenarios in their own modules with a table of their own (bench.scale: the curve).
EXTRA_TABLES: list[Callable[[mm.Measurements], str]] = []


def _digits(value: float) -> int:
    return 0 if abs(value) >= 100 else 2 if abs(value) >= 1 else 3


def _cell(m: mm.Measurements, metric: mm.Metric, target: str) -> str:
    stats = m.stats(metric, target)
    return stats.cell(_digits(stats.median)) if stats else "-"


def _ratio(m: mm.Measurements, metric: mm.Metric, against: str) -> str:
    value = m.ratio(metric, against)
    return f"{value:.2f}" if value is not None else "-"


def _rows(m: mm.Measurements) -> Iterator[tuple[mm.Metric, str, mm.Check | None]]:
    """Each measured row's metric, label and goal; a metric also measured with the TLS
    upstream (``--upstream-tls``) gives two rows, labelled plain and TLS."""
    checks = {c.metric.key: c for c in mm.CHECKS}
    for metric in ROWS:
        check, twin = checks.get(metric.key), mm.over_tls(metric)
        if twin.key not in m.samples:
            yield metric, metric.label, check
            continue
        yield metric, f"{metric.label} [plain upstream]", check
        yield twin, twin.label, check and dataclasses.replace(check, metric=twin)


def table(m: mm.Measurements) -> str:
    lines = [
        "| scenario | gar-proxy | distribution proxy | upstream direct | gar/dist "
        "| gar/upstream | goal | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for metric, label, check in _rows(m):
        if metric.key not in m.samples:
            continue
        goal = met = ""
        if check is not None:
            goal = check.describe()
            _, ok = m.verdict(check)
            met = "?" if ok is None else ("yes" if ok else "**no**")
        lines.append(
            f"| {label} | {_cell(m, metric, mm.GAR)} | {_cell(m, metric, mm.DIST)} "
            f"| {_cell(m, metric, mm.DIRECT)} | {_ratio(m, metric, mm.DIST)} "
            f"| {_ratio(m, metric, mm.DIRECT)} | {goal} | {met} |"
        )
    return "\n".join(lines)


def summary(m: mm.Measurements, context: list[str]) -> str:
    parts = [*context, "", table(m)]
    parts += [line for extra in m.tables for line in ("", extra)]
    parts += [f"\n{text}" for text in (extra(m) for extra in EXTRA_TABLES) if text]
    if m.notes:
        parts += ["", *(f"- {note}" for note in m.notes)]
    return "\n".join(parts)


def context_lines(runs: int, profile: str, tools: str, setup_seconds: float) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    command = "python -m bench " + shlex.join(sys.argv[1:])
    load = os.getloadavg()
    return [
        f"- date: {now}; cores (nproc): {os.cpu_count()}; load average at start: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- command: `{command.strip()}`",
        f"- profile: {profile}; runs per scenario: {runs}; load tools: {tools}; "
        f"set-up {setup_seconds:.0f}s",
        "- cells: median (min-max) over runs; ratios of medians",
    ]


def record(path: Path, text: str) -> None:
    with path.open("a") as out:
        out.write("\n## Run\n\n" + text + "\n")
