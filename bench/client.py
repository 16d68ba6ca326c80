"""The client every target is measured with: an async httpx puller, like docker.

It fetches the manifest (by tag; an index is resolved to linux/amd64), then the config
and layers at most ``parallel`` at a time, reading and discarding bodies. It checks
each blob's size but does not hash (on a 2-core machine the client shares the CPU with
the proxy under test; hashing would slow both targets alike and blur the ratio)::

    async with new_client() as client:
        pulled = await pull_image(client, "http://127.0.0.1:5000", "bench/big", "v1")
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from proxy.oci import mediatypes as mt

ACCEPT = ", ".join(mt.DEFAULT_ACCEPT)
PULL_TIMEOUT = 600.0
T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


class BenchError(RuntimeError):
    """A target answered wrongly: the benchmark stops rather than time a failure."""


def new_client(connections: int = 64, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """``verify``: the test CA's context when a target is the HTTPS upstream."""
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(PULL_TIMEOUT, connect=10.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,
    )


async def fetch_manifest(
    client: httpx.AsyncClient, base: str, repo: str, ref: str
) -> tuple[str, dict[str, Any]]:
    response = await client.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    if response.status_code != 200:
        raise BenchError(f"GET manifest {repo}:{ref} -> {response.status_code} {response.text}")
    media_type = response.headers.get("content-type", "").split(";")[0]
    return media_type, json.loads(response.content)


async def read_blob(client: httpx.AsyncClient, base: str, repo: str, digest: str, size: int) -> int:
    """GET one blob, discard it, return its length; raises if the length is wrong."""
    received = 0
    async with client.stream("GET", f"{base}/v2/{repo}/blobs/{digest}") as response:
        if response.status_code != 200:
            raise BenchError(f"GET blob {digest} -> {response.status_code}")
        async for chunk in response.aiter_raw():
            received += len(chunk)
    if received != size:
        raise BenchError(f"blob {digest}: {received} bytes, expected {size}")
    return received


async def pull_image(
    client: httpx.AsyncClient, base: str, repo: str, ref: str, *, parallel: int = 3
) -> int:
    """Pull one image the way docker does; returns the blob bytes received."""
    media_type, manifest = await fetch_manifest(client, base, repo, ref)
    if media_type in mt.INDEX_TYPES:
        chosen = next(
            m for m in manifest["manifests"]
            if m.get("platform", {}).get("architecture") == "amd64"
        )  # fmt: skip
        _, manifest = await fetch_manifest(client, base, repo, chosen["digest"])
    descriptors = [manifest["config"], *manifest["layers"]]
    gate = asyncio.Semaphore(parallel)

    async def one(descriptor: dict[str, Any]) -> int:
        async with gate:
            return await read_blob(client, base, repo, descriptor["digest"], descriptor["size"])

    return sum(await asyncio.gather(*(one(d) for d in descriptors)))
