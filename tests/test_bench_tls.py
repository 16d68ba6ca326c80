"""``python -m bench --upstream-tls``'s rig: the upstream over HTTPS with a test CA that
gar-proxy, the distribution proxy and the direct puller all trust, and the relay still
counting what each proxy fetched (TLS records now) -- about 15 s on tiny images."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.content import PROFILES
from bench.rig import Rig
from bench.scenarios import pull_many
from bench.tls import tls_rig
from tests.conftest import require_binaries

pytestmark = pytest.mark.realclient  # the CNCF registry, four times


def test_a_cold_pull_through_each_proxy_reaches_the_https_upstream(tmp_path: Path) -> None:
    require_binaries("docker-registry")
    with Rig.up(tmp_path, PROFILES["smoke"]) as plain, tls_rig(plain) as rig:
        image = rig.corpus.big
        assert rig.relay.url.startswith("https://") and rig.direct.url.startswith("https://")
        # The upstream speaks only TLS: a plain request gets no registry answer.
        response = httpx.get(rig.direct.url.replace("https://", "http://") + "/v2/", timeout=5)
        assert response.status_code == 400

        # Both proxies start on empty storage: each pull is cold; each raises on a
        # wrong byte count. The relay counts TLS records, a little more than the blobs.
        # The direct pull goes first: the distribution proxy goes on fetching in the
        # background after its pull, which the relay would count during a later one.
        order = (rig.direct, rig.gar, rig.distribution)
        fetched = {t.name: pull_many(rig, t, image, 1).upstream_bytes for t in order}
        assert image.blob_bytes <= fetched["gar-proxy"] < image.blob_bytes * 1.05
        assert fetched["distribution"] >= image.blob_bytes  # it fetches each blob twice
        assert fetched["upstream"] == 0  # the direct pull skips the relay
