"""``python -m bench``: gar-proxy against the distribution registry's proxy mode.

Sets up on 127.0.0.1 an upstream registry holding generated images, a counting relay
in front of it, gar-proxy and ``docker-registry`` (``proxy: remoteurl:``) both behind
the relay; runs the scenarios; prints a table of medians and ratios and appends it to
``bench/RESULTS.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import measure as mm
from bench import report, tls
from bench.content import PROFILES
from bench.load import blob_tool, head_tool
from bench.rig import Rig
from bench.scenarios import SCENARIOS, Options, peak_rss, skopeo_sanity

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _scenarios(text: str) -> list[int]:
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,3,5, got {text!r}") from None
    if not chosen or any(n not in (*SCENARIOS, 6) for n in chosen):
        raise argparse.ArgumentTypeError(f"scenarios are numbered {sorted({*SCENARIOS, 6})}")
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="small images, 2 runs, 2 s of HEADs: a smoke run in under 2 minutes",
    )
    p.add_argument("--profile", choices=sorted(PROFILES), help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, help="runs per scenario (default 5; --quick 2)")
    p.add_argument(
        "--scenarios",
        type=_scenarios,
        default=[1, 2, 3, 4, 5, 6, 7, 10],
        help="comma-separated subset of 1-7 and 10 (6, peak RSS, comes from 3 and 4), or "
        "more, run only when asked for: 8 (1 replica against a ring of 3 behind nginx), "
        "9 (scale), 11 (skopeo pushes through gar-proxy and direct)",
    )
    p.add_argument(
        "--head-seconds",
        type=float,
        help="duration of each manifest HEAD run (default 5; --quick 2)",
    )
    p.add_argument(
        "--upstream-tls",
        action="store_true",
        help="run the cold scenarios (1, 3, 7, 10) and the pushes (11) again with the upstream "
        "reached over HTTPS",
    )
    p.add_argument("--skopeo", action="store_true", help="also copy images with skopeo")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record py-spy flame graphs of gar-proxy in scenarios 1, 2, 4, 5, 7",
    )
    p.add_argument(
        "--py-spy-format",
        choices=["flamegraph", "raw", "speedscope"],
        default="flamegraph",
        help="py-spy output format (default flamegraph)",
    )
    p.add_argument(
        "--workdir", type=Path, help="keep everything here; a later run reuses its upstream images"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="append the table here")
    p.add_argument("--no-record", action="store_true", help="print only")
    return p  # fmt: skip


def run(argv: Sequence[str] | None = None) -> tuple[mm.Measurements, str]:
    """Set up, run the chosen scenarios, tear down; the measurements and the report."""
    args = parser().parse_args(argv)
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    runs = args.runs or (2 if args.quick or profile.name != "full" else 5)
    head_seconds = args.head_seconds or (2.0 if args.quick or profile.name != "full" else 5.0)
    options = Options(runs, head_seconds, args.py_spy, args.py_spy_format, args.quick)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gar-bench-"))
    m = mm.Measurements()
    tools = f"pulls: httpx; blob reads: {blob_tool()}; HEADs: {head_tool()}"
    try:
        with Rig.up(workdir, profile) as rig, contextlib.ExitStack() as stack:
            over_tls = stack.enter_context(tls.tls_rig(rig)) if args.upstream_tls else None
            context = report.context_lines(runs, profile.name, tools, rig.setup_seconds)
            context += [tls.CONTEXT] if over_tls else []
            for number in args.scenarios:
                if number in SCENARIOS:
                    print(f"scenario {number} ...", file=sys.stderr, flush=True)
                    SCENARIOS[number](rig, m, options)
                if over_tls and number in tls.COLD:
                    print(f"scenario {number}, TLS upstream ...", file=sys.stderr, flush=True)
                    tls.run(over_tls, m, options, number)
            if 6 in args.scenarios:
                peak_rss(m)
            if args.skopeo:
                skopeo_sanity(rig, m)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report.summary(m, context)
    if not args.no_record:
        report.record(args.results, text)
    return m, text


def main(argv: Sequence[str] | None = None) -> int:
    _, text = run(argv)
    print(text)
    return 0
