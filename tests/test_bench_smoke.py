"""The benchmark machinery still runs end to end (``python -m bench``, tiny images, one
run of each scenario, about 15 s, and the ring of scenario 8); the numbers are not timed
here, but single-flight is: eight concurrent cold pulls through gar-proxy fetch the
image from upstream once, and so do concurrent pulls through a ring of three replicas;
a cold fill (7) costs gar-proxy one download and the distribution proxy two; a push
(11) sends every byte once."""

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
    require_binaries("docker-registry", "nginx", "skopeo")
    argv = ["--profile", "smoke", "--runs", "1", "--head-seconds", "1", "--no-record",
            "--scenarios", "1,2,3,4,5,6,7,8,10,11", "--workdir", str(tmp_path)]  # fmt: skip

    m, text = run(argv)

    proxies_only = (mm.PEAK_RSS, mm.HERD_RSS, mm.BLOB_RSS, mm.HERD_BYTES, mm.WARM_UPSTREAM,
                    mm.FILL_STORED, mm.FILL_BYTES)  # fmt: skip
    pushes = (mm.PUSH_BIG, mm.PUSH_BIG_CPU, mm.PUSH_BIG_BYTES,
              mm.PUSH_HUGE, mm.PUSH_HUGE_CPU, mm.PUSH_HUGE_BYTES)  # fmt: skip
    for metric in report.ROWS:
        assert f"| {metric.label} |" in text, f"no row for {metric.label}"
        if metric not in proxies_only:
            assert m.stats(metric, mm.DIRECT) is not None, f"no upstream figure: {metric.label}"
        for target in (mm.GAR,) if metric in pushes else (mm.GAR, mm.DIST):
            assert m.stats(metric, target) is not None, f"no {target} figure: {metric.label}"
    # A fill is counted until stored: the distribution proxy downloads a cold blob twice
    # (one relayed to the client, one stored), gar-proxy once.
    fill_bytes = (m.stats(mm.FILL_BYTES, mm.GAR), m.stats(mm.FILL_BYTES, mm.DIST))
    assert fill_bytes[0] is not None and fill_bytes[0].median == pytest.approx(1.0, abs=0.01)
    assert fill_bytes[1] is not None and fill_bytes[1].median > 1.5
    for pushed in (mm.PUSH_BIG_BYTES, mm.PUSH_HUGE_BYTES):  # every byte once, no mount
        assert m.ratio(pushed, mm.DIRECT) == pytest.approx(1.0, abs=0.01)
    herd = m.stats(mm.HERD_BYTES, mm.GAR)
    assert herd is not None and 1.0 <= herd.median <= 1.05
    reference = m.stats(mm.HERD_BYTES, mm.DIST)
    assert reference is not None and reference.median > 1.5  # the relay does count
    # No errors during the HEAD runs; the only other note is a repeated herd run of
    # the distribution proxy, whose own race answers some concurrent cold GETs 500.
    assert [note for note in m.notes if not note.startswith("3: distribution")] == []

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
