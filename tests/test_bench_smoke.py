"""The benchmark machinery still runs end to end (``python -m bench``, tiny images, one
run of each scenario, about 15 s, and the ring of scenario 8); the numbers are not timed
here, but single-flight is: eight concurrent cold pulls through gar-proxy fetch the
image from upstream once, and so do concurrent pulls through a ring of three replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import measure as mm
from bench import report
from bench import ring as ringbench
from bench.cli import run
from tests.conftest import require_binaries

pytestmark = pytest.mark.realclient  # the CNCF registry, twice


def test_every_scenario_runs_and_concurrent_cold_pulls_fetch_once(tmp_path: Path) -> None:
    require_binaries("docker-registry", "nginx")
    argv = ["--profile", "smoke", "--runs", "1", "--head-seconds", "1", "--no-record",
            "--scenarios", "1,2,3,4,5,6,7,8", "--workdir", str(tmp_path)]  # fmt: skip

    m, text = run(argv)

    for metric in report.ROWS:
        assert f"| {metric.label} |" in text, f"no row for {metric.label}"
        if metric not in (mm.PEAK_RSS, mm.HERD_RSS, mm.BLOB_RSS, mm.HERD_BYTES, mm.WARM_UPSTREAM):
            assert m.stats(metric, mm.DIRECT) is not None, f"no upstream figure: {metric.label}"
        for target in (mm.GAR, mm.DIST):
            assert m.stats(metric, target) is not None, f"no {target} figure: {metric.label}"
    herd = m.stats(mm.HERD_BYTES, mm.GAR)
    assert herd is not None and 1.0 <= herd.median <= 1.05
    reference = m.stats(mm.HERD_BYTES, mm.DIST)
    assert reference is not None and reference.median > 1.5  # the relay does count
    assert m.notes == []  # no errors during the HEAD runs

    # Scenario 8: the ring fetches the image once across its replicas, with as many
    # upstream requests as one replica makes, and a warm pull asks upstream nothing.
    assert f"| scenario 8: {ringbench.PULLERS['smoke']} pullers" in text
    for metric in ringbench.ROWS:
        assert f"| {metric.label} |" in text, f"no row for {metric.label}"
    for setup in (ringbench.SINGLE, ringbench.RING):
        cold = m.stats(ringbench.COLD_BYTES, setup)
        assert cold is not None and 1.0 <= cold.median <= 1.05, setup
        assert m.stats(ringbench.WARM_REQUESTS, setup) == mm.Stats(0, 0, 0, 1), setup
    requests = [m.stats(ringbench.COLD_REQUESTS, s) for s in (ringbench.SINGLE, ringbench.RING)]
    assert requests[0] is not None and requests[0] == requests[1]  # config, layers, manifest
