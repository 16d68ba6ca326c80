"""Scenario 10: time to first byte of a cold manifest and a cold blob.

Each run restarts each proxy on empty storage, warms its upstream connections with a
small image of its own (``bench/small/app-000``: manifest and blobs), then one client
asks it for ``bench/big``'s manifest by tag, and then for the image's largest layer,
each on a new connection; the same against the upstream directly. So what is timed
is a cache miss in a running proxy, not its first connection upstream.
Measured from the request sent on an open connection to the response's first body
byte (``first_byte``); the whole body is read (the blob's fill is not left running
into the next target's turn).
"""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING

from bench import measure as mm
from bench.client import ACCEPT, BenchError

if TYPE_CHECKING:
    from pathlib import Path

    from bench.rig import Rig
    from bench.scenarios import Options

TIMEOUT = 600.0
READ = 1024 * 1024


def first_byte(url: str, size: int | None, ca: Path | None, accept: str | None = None) -> float:
    """Seconds from the request sent (on a connection already open) to the first byte
    of the response's body, not of its head: a proxy that answered with headers at
    once and held the bytes back would not look fast. Reads (and checks) the rest."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.connect()
        started = time.perf_counter()
        conn.request("GET", parts.path, headers={"Accept": accept} if accept else {})
        response = conn.getresponse()
        first = response.read(1)
        seconds = time.perf_counter() - started
        if response.status != 200 or not first:
            raise BenchError(f"GET {url}: {response.status}")
        received, buffer = 1, bytearray(READ)
        while count := response.readinto(buffer):
            received += count
    finally:
        conn.close()
    if size is not None and received != size:
        raise BenchError(f"GET {url}: {received} of {size} bytes")
    return seconds


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
