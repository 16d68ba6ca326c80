"""Load generators: manifest HEADs at a fixed concurrency, and parallel blob downloads.

On a 2-core machine the generator competes with the proxy for CPU, so compiled tools
are used when installed: ``hey`` (``apt-get install hey``) for the HEAD rate, ``curl``
for throughput. Without them lean Python stand-ins run (raw asyncio protocols
for HEADs: an httpx generator at 64 connections measured itself, ~100 req/s, not the
proxy), and the results name the tool. Every loop is bounded in time and in count.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import ssl
import statistics
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from bench.client import ACCEPT, BenchError, new_client, read_blob

MAX_REQUESTS = 5_000_000  # per HEAD run; far above what a 2-core box reaches


@dataclass(frozen=True)
class HeadRate:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def head_tool() -> str:
    return "hey" if shutil.which("hey") else "python"


def head_load(
    base: str, paths: list[str], *, seconds: float, connections: int, scratch: Path
) -> HeadRate:
    """HEAD requests on ``connections`` HTTP/1.1 keep-alive connections for ``seconds``.

    ``hey`` asks for ``paths[0]`` only; the Python generator goes round ``paths``. Not
    wrk: Debian's wrk 4.1 waits for a body after a HEAD response with a Content-Length.
    Not ab: it speaks HTTP/1.0, and uvicorn closes those connections after each
    response, so ab would time a TCP handshake per request for gar-proxy only.
    """
    if shutil.which("hey"):
        return _hey(base + paths[0], seconds, connections)
    return asyncio.run(_python_heads(base, paths, seconds, connections))


def _hey(url: str, seconds: float, connections: int) -> HeadRate:
    # One scheduler thread: on a 2-core machine a second would take CPU from the server.
    command = ["hey", "-z", f"{seconds}s", "-c", str(connections), "-cpus", "1", "-t", "10",
               "-m", "HEAD", "-H", f"Accept: {ACCEPT}", url]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    total = re.search(r"Total:\s+([\d.]+) secs", out)
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    _, _, error_lines = out.partition("Error distribution:")
    failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", error_lines, re.MULTILINE))
    if total is None or not statuses:
        raise BenchError(f"hey printed no result:\n{out}")

    def percentile(p: int) -> float:
        match = re.search(rf"\b{p}% in ([\d.]+) secs", out)
        return float(match[1]) * 1e3 if match else 0.0

    answered = sum(statuses.values())
    errors = answered - statuses.get(200, 0) + failed
    return HeadRate(answered, float(total[1]), percentile(50), percentile(99), errors, "hey")


class _HeadLoop(asyncio.Protocol):
    """One keep-alive connection sending HEADs back to back until the deadline."""

    def __init__(self, requests: list[bytes], offset: int, deadline: float, into: _Tally) -> None:
        self.requests, self.next, self.deadline, self.tally = requests, offset, deadline, into
        self.buffer = b""
        self.sent_at = 0.0
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        now = time.perf_counter()
        if now >= self.deadline or len(self.tally.latencies) >= MAX_REQUESTS:
            self.transport.close()
            return
        self.sent_at = now
        self.transport.write(self.requests[self.next % len(self.requests)])
        self.next += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # A HEAD response ends with its headers, whatever Content-Length says.
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.tally.latencies.append(time.perf_counter() - self.sent_at)
            self.tally.errors += not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class _Tally:
    latencies: list[float]
    errors: int = 0


async def _python_heads(base: str, paths: list[str], seconds: float, connections: int) -> HeadRate:
    parts = urllib.parse.urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [
        f"HEAD {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {ACCEPT}\r\n\r\n".encode()
        for path in paths
    ]
    tally = _Tally([])
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    deadline = started + seconds
    loops = []
    for n in range(connections):
        factory = functools.partial(_HeadLoop, requests, n, deadline, tally)
        _, protocol = await loop.create_connection(factory, host, port)
        loops.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(p.closed for p in loops)), seconds + 30)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(tally.latencies, n=100) if len(tally.latencies) > 1 else [0.0] * 99
    return HeadRate(
        len(tally.latencies), elapsed, cuts[49] * 1e3, cuts[98] * 1e3, tally.errors, "python"
    )


def blob_tool() -> str:
    return "curl" if shutil.which("curl") else "httpx"


def parallel_blob_reads(url: str, size: int, clients: int, ca: Path | None = None) -> float:
    """``clients`` simultaneous GETs of one blob; the wall time until all are read.
    ``ca``: the CA to trust when ``url`` is the HTTPS upstream (bench/tls.py)."""
    if shutil.which("curl"):
        return _curl_reads(url, size, clients, ca)
    return asyncio.run(_httpx_reads(url, size, clients, ca))


def _curl_reads(url: str, size: int, clients: int, ca: Path | None = None) -> float:
    command = ["curl", "--silent", "--show-error", "--fail", "--output", "/dev/null",
               "--max-time", "600", "--write-out", "%{size_download}", url]  # fmt: skip
    command += ["--cacert", str(ca)] if ca else []
    started = time.perf_counter()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    outputs = [proc.communicate(timeout=660)[0] for proc in procs]
    elapsed = time.perf_counter() - started
    for proc, out in zip(procs, outputs, strict=True):
        if proc.returncode != 0 or int(out or 0) != size:
            raise BenchError(f"curl {url}: exit {proc.returncode}, {out} of {size} bytes")
    return elapsed


async def _httpx_reads(url: str, size: int, clients: int, ca: Path | None = None) -> float:
    base, _, rest = url.partition("/v2/")
    repo, _, digest = rest.partition("/blobs/")
    started = time.perf_counter()
    verify = ssl.create_default_context(cafile=str(ca)) if ca else True
    async with new_client(clients, verify) as client:
        await asyncio.gather(*(read_blob(client, base, repo, digest, size) for _ in range(clients)))
    return time.perf_counter() - started


def python_head_load(base: str, paths: list[str], *, seconds: float, connections: int) -> HeadRate:
    """The Python generator even where ``hey`` is installed: it goes round all of
    ``paths`` (hey asks for one URL), which a lookup-cost measurement needs."""
    return asyncio.run(_python_heads(base, paths, seconds, connections))
