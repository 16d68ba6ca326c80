"""Push through the proxy with real clients, the CNCF distribution registry upstream.

What was pushed is then read from the registry directly (not through the proxy) and
must carry the manifest digest the client pushed. The memory test streams a 1 GiB
blob through a proxy subprocess and reads its peak RSS from ``/proc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.images import build_image, make_layer, push_image, write_oci_layout
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.realclients import DistributionRegistry, Dockerd, Skopeo

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
GIB = 1 << 30
MIB = 1 << 20
RSS_LIMIT = 150 * MIB


def _upstream_digest(registry: DistributionRegistry, repo: str, tag: str) -> str:
    answer = httpx.get(f"{registry.url}/v2/{repo}/manifests/{tag}", headers=ACCEPT)
    assert answer.status_code == 200, answer.text
    return answer.headers["docker-content-digest"]


def test_skopeo_copies_a_layout_through_the_proxy(
    distribution_registry: DistributionRegistry, skopeo_runner: Skopeo, tmp_path: Path
) -> None:
    image = build_image([make_layer({"etc/motd": b"pushed\n"}), make_layer(seed=21)])
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    with run_proxy(proxy_settings(tmp_path, distribution_registry.url)) as proxy:
        target = f"docker://{proxy.url.removeprefix('http://')}/proj/repo/skopeo-push:v1"
        skopeo_runner("copy", "--quiet", f"oci:{layout}:v1", target)
        assert proxy.upstream_fetches("blob") == 0
    assert _upstream_digest(distribution_registry, "proj/repo/skopeo-push", "v1") == image.digest


def test_docker_push_through_the_proxy(
    distribution_registry: DistributionRegistry, dockerd: Dockerd, tmp_path: Path
) -> None:
    layers = [make_layer({"hello": b"docker push\n"}), make_layer(seed=22)]
    image = build_image(layers, fmt="docker")
    push_image(distribution_registry.url, "proj/repo/docker-src", "v1", image)
    source = f"{distribution_registry.host}/proj/repo/docker-src:v1"
    dockerd.cli("pull", "--quiet", source)
    with run_proxy(proxy_settings(tmp_path, distribution_registry.url)) as proxy:
        target = f"{proxy.url.removeprefix('http://')}/proj/repo/docker-push:v1"
        dockerd.cli("tag", source, target)
        digest = dockerd.push(target)
    assert _upstream_digest(distribution_registry, "proj/repo/docker-push", "v1") == digest


def _gib_of_chunks(hasher: hashlib._Hash) -> Iterator[bytes]:
    """1 GiB, a MiB at a time, never held whole; hashed as it goes."""
    for index in range(GIB // MIB):
        chunk = index.to_bytes(8, "big") * (MIB // 8)
        hasher.update(chunk)
        yield chunk


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found[1]) * 1024


@contextlib.contextmanager
def proxy_process(upstream: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """``python -m proxy ... serve`` on port 0; yields (URL, pid) once it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAR_")}
    env["HOME"] = str(workdir)
    command = [
        sys.executable, "-m", "proxy", "--upstream", upstream, "--auth", "none",
        "--cache-dir", str(workdir / "cache"), "serve", "--listen", "127.0.0.1:0",
    ]  # fmt: skip
    # The with closes the stdout pipe (else: ResourceWarning, unclosed file).
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            ready = re.search(r"listening on (http://\S+)", server.stdout.readline())
            assert ready is not None, "the proxy did not start"
            yield ready[1], server.pid
        finally:
            server.terminate()
            server.wait(30)


@pytest.mark.slow
def test_a_1_gib_push_streams_through_a_small_proxy(
    distribution_registry: DistributionRegistry, tmp_path: Path
) -> None:
    hasher = hashlib.sha256()
    with (
        proxy_process(distribution_registry.url, tmp_path) as (url, pid),
        httpx.Client(base_url=url, timeout=300) as client,
    ):
        location = client.post("/v2/proj/repo/big/blobs/uploads/").headers["location"]
        sent = client.patch(location, content=_gib_of_chunks(hasher))  # chunked, streamed
        assert sent.status_code == 202, sent.text
        digest = "sha256:" + hasher.hexdigest()
        done = client.put(sent.headers["location"], params={"digest": digest})
        assert done.status_code == 201, done.text
        peak = _peak_rss(pid)
    print(f"proxy peak RSS while pushing 1 GiB: {peak / MIB:.1f} MiB")
    assert peak < RSS_LIMIT
    head = httpx.head(f"{distribution_registry.url}/v2/proj/repo/big/blobs/{digest}")
    assert int(head.headers["content-length"]) == GIB
    cached = tmp_path / "cache" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    assert cached.stat().st_size == GIB
