"""Scenario 10: time to first byte of a cold manifest and a cold blob.

Each run restarts each proxy on empty storage, warms its upstream connections with a
small image of its own (``bench/small/app-000``: manifest and blobs), then one client
asks it for ``bench/big``'s manifest by tag, and then for the image's largest layer,
each on a new connection; the same against the upstream directly. So what is timed
is a cache miss in a running proxy, not its first connection upstream.
Measured from the request's first byte sent to the response's first body byte
(curl's ``time_starttransfer`` less its ``time_pretransfer``: the connection to the
target is not counted); the whole body is read (the blob's fill is not left running
into the next target's turn).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from bench import measure as mm
from bench.client import ACCEPT, BenchError

if TYPE_CHECKING:
    from pathlib import Path

    from bench.rig import Rig
    from bench.scenarios import Options

CURL_TIMEOUT = 600


def first_byte(url: str, size: int | None, ca: Path | None, accept: str | None = None) -> float:
    """Seconds from the request sent to the first body byte; checks the size read."""
    if shutil.which("curl") is None:
        raise BenchError("scenario 10 needs curl")
    command = ["curl", "--silent", "--show-error", "--fail", "--output", "/dev/null",
               "--max-time", str(CURL_TIMEOUT),
               "--write-out", "%{time_pretransfer} %{time_starttransfer} %{size_download}",
               url]  # fmt: skip
    command += ["--cacert", str(ca)] if ca else []
    command += ["--header", f"Accept: {accept}"] if accept else []
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=CURL_TIMEOUT + 60, check=False
    )
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 3:
        raise BenchError(f"curl {url}: exit {out.returncode}: {out.stderr.strip()}")
    ready, first, received = float(fields[0]), float(fields[1]), int(fields[2])
    if size is not None and received != size:
        raise BenchError(f"curl {url}: {received} of {size} bytes")
    return first - ready


def cold_latency(rig: Rig, m: mm.Measurements, options: Options) -> None:
    image = rig.corpus.big
    layer = max(image.blobs, key=lambda blob: blob.size)
    for run in range(options.runs):
        targets = rig.targets if run % 2 == 0 else tuple(reversed(rig.targets))
        for target in targets:
            target.fresh()
            ca = rig.tls.ca if rig.tls and target is rig.direct else None
            warm = rig.corpus.small[0]
            first_byte(f"{target.url}/v2/{warm.repo}/manifests/{warm.tag}", None, ca, ACCEPT)
            for other in warm.blobs:
                first_byte(f"{target.url}/v2/{warm.repo}/blobs/{other.digest}", other.size, ca)
            manifest = f"{target.url}/v2/{image.repo}/manifests/{image.tag}"
            blob = f"{target.url}/v2/{image.repo}/blobs/{layer.digest}"
            m.add(mm.TTFB_MANIFEST, target.name, first_byte(manifest, None, ca, ACCEPT) * 1000)
            m.add(mm.TTFB_BLOB, target.name, first_byte(blob, layer.size, ca) * 1000)
