"""Real clients pull through the proxy (a subprocess), from real upstreams.

skopeo, podman and docker against the CNCF distribution registry (auth none) get the
same manifest digests through the proxy as straight from the registry; docker takes
the machine's child of a multi-arch index. containerd's mirror form (``?ns=HOST``)
picks the GAR location with a GAR-shaped upstream (the fake GAR, and ``ctr`` as the
client) and is accepted and ignored in front of any other registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import Format, Image, Index, build_image, build_index, make_layer, push_image
from testkit.proxyprocess import ProxyProcess
from testkit.realclients import CommandError, DistributionRegistry, Dockerd, Podman, Skopeo, run
from tests.conftest import require_binaries

ACCEPT = ", ".join(mt.DEFAULT_ACCEPT)
MACHINE_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine(), platform.machine()
)
OTHER_ARCH = "arm64" if MACHINE_ARCH != "arm64" else "amd64"


@pytest.fixture(scope="module")
def registry_proxy(
    distribution_registry: DistributionRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """One proxy subprocess in front of the module's registry; tests use their own repos."""
    work = tmp_path_factory.mktemp("proxy")
    with ProxyProcess(work / "cache", distribution_registry.url) as running:
        yield running


def _cached_blobs(proxy: ProxyProcess) -> set[str]:
    root = proxy.cache_dir / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in root.glob("*/*")} if root.exists() else set()


def _layout_digest(layout: Path) -> str:
    manifests = json.loads((layout / "index.json").read_bytes())["manifests"]
    assert len(manifests) == 1, manifests
    digest: str = manifests[0]["digest"]
    return digest


def _small_image(name: str, fmt: Format = "oci", architecture: str = "amd64") -> Image:
    layers = [make_layer({f"{name}/a": name.encode()}), make_layer({f"{name}/b": b"b" * 4096})]
    return build_image(layers, fmt=fmt, architecture=architecture)


# ---------------------------------------------------------------- skopeo


@pytest.mark.parametrize("kind", ["image", "index"])
def test_skopeo_copy_through_the_proxy_matches_the_upstream(
    kind: str,
    distribution_registry: DistributionRegistry,
    registry_proxy: ProxyProcess,
    skopeo_runner: Skopeo,
    tmp_path: Path,
) -> None:
    repo = f"proj/repo/skopeo-{kind}"
    single = _small_image(repo)
    image: Image | Index = single
    if kind == "index":
        image = build_index([single, _small_image(repo + "-arm", architecture="arm64")])
    push_image(distribution_registry.url, repo, "v1", image)
    every = ["--all"] if kind == "index" else []

    for host, layout in ((registry_proxy.host, "p"), (distribution_registry.host, "d")):
        skopeo_runner("copy", *every, f"docker://{host}/{repo}:v1", f"oci:{tmp_path / layout}:v1")

    assert _layout_digest(tmp_path / "p") == _layout_digest(tmp_path / "d") == image.digest
    assert {b.digest for b in image.blobs} <= _cached_blobs(registry_proxy)


# ---------------------------------------------------------------- podman


def test_podman_pull_through_the_proxy_matches_the_upstream(
    distribution_registry: DistributionRegistry, registry_proxy: ProxyProcess, podman_runner: Podman
) -> None:
    repo = "proj/repo/podman"
    image = _small_image(repo, fmt="docker")
    push_image(distribution_registry.url, repo, "v1", image)

    podman_runner("pull", "--quiet", f"{registry_proxy.host}/{repo}:v1")
    through_proxy = podman_runner.image_digest(f"{registry_proxy.host}/{repo}:v1")
    podman_runner("pull", "--quiet", f"{distribution_registry.host}/{repo}:v1")
    direct = podman_runner.image_digest(f"{distribution_registry.host}/{repo}:v1")

    assert through_proxy == direct == image.digest
    assert {b.digest for b in image.blobs} <= _cached_blobs(registry_proxy)


# ---------------------------------------------------------------- docker


def test_docker_pull_through_the_proxy(
    distribution_registry: DistributionRegistry, registry_proxy: ProxyProcess, dockerd: Dockerd
) -> None:
    repo = "proj/repo/docker"
    image = _small_image(repo, fmt="docker")
    push_image(distribution_registry.url, repo, "v1", image)
    dockerd.remove_all_images()

    dockerd.cli("pull", "--quiet", f"{registry_proxy.host}/{repo}:v1")

    assert dockerd.repo_digests(f"{registry_proxy.host}/{repo}:v1") == [
        f"{registry_proxy.host}/{repo}@{image.digest}"
    ]
    image_id = dockerd.cli(
        "image", "inspect", "--format", "{{.Id}}", f"{registry_proxy.host}/{repo}:v1"
    )
    assert image_id.stdout.strip() == image.config.digest


def test_docker_pulls_the_machines_child_of_a_multi_arch_index(
    distribution_registry: DistributionRegistry, registry_proxy: ProxyProcess, dockerd: Dockerd
) -> None:
    repo = "proj/repo/docker-multi"
    native = _small_image(repo + "-native", fmt="docker", architecture=MACHINE_ARCH)
    other = _small_image(repo + "-other", fmt="docker", architecture=OTHER_ARCH)
    index = build_index([other, native], fmt="docker")  # the native child is not first
    push_image(distribution_registry.url, repo, "v1", index)
    dockerd.remove_all_images()

    dockerd.cli("pull", "--quiet", f"{registry_proxy.host}/{repo}:v1")

    ref = f"{registry_proxy.host}/{repo}:v1"
    assert dockerd.repo_digests(ref) == [f"{registry_proxy.host}/{repo}@{index.digest}"]
    inspected = dockerd.cli("image", "inspect", "--format", "{{.Id}} {{.Architecture}}", ref)
    assert inspected.stdout.split() == [native.config.digest, MACHINE_ARCH]
    cached = _cached_blobs(registry_proxy)
    assert {b.digest for b in native.blobs} <= cached
    assert not {b.digest for b in other.layers} & cached  # the other child's layers: never


# ---------------------------------------------------------------- containerd's ?ns=


def test_ns_is_accepted_and_ignored_in_front_of_a_plain_registry(
    distribution_registry: DistributionRegistry, registry_proxy: ProxyProcess
) -> None:
    repo = "proj/repo/ns"
    image = _small_image(repo)
    push_image(distribution_registry.url, repo, "v1", image)
    with httpx.Client(base_url=registry_proxy.url, timeout=30) as client:
        for ns in ("docker.io", "us-docker.pkg.dev", "europe-west1-docker.pkg.dev"):
            got = client.get(
                f"/v2/{repo}/manifests/v1", params={"ns": ns}, headers={"Accept": ACCEPT}
            )
            assert got.status_code == 200, (ns, got.text)
            assert got.content == image.manifest
            blob = client.get(f"/v2/{repo}/blobs/{image.config.digest}", params={"ns": ns})
            assert blob.content == image.config.data


@pytest.fixture(scope="module")
def gar() -> Iterator[tuple[FakeGAR, str]]:
    fake = FakeGAR(auth="none")
    with fake.serve() as url:
        yield fake, url


@pytest.fixture(scope="module")
def gar_proxy(
    gar: tuple[FakeGAR, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    work = tmp_path_factory.mktemp("gar-proxy")
    # Default location "us"; the image lives only in europe-west1.
    with ProxyProcess(work / "cache", gar[1] + "/{location}") as running:
        yield running


def test_ns_names_the_gar_location(gar: tuple[FakeGAR, str], gar_proxy: ProxyProcess) -> None:
    fake, _ = gar
    repo = "proj/repo/ns-http"
    image = _small_image(repo)
    fake.put_image("europe-west1", repo, "v1", image)
    fake.reset_counts()
    ns = {"ns": "europe-west1-docker.pkg.dev"}
    with httpx.Client(base_url=gar_proxy.url, timeout=30) as client:
        got = client.get(f"/v2/{repo}/manifests/v1", params=ns, headers={"Accept": ACCEPT})
        assert got.status_code == 200, got.text
        assert got.content == image.manifest
        for blob in image.blobs:
            assert client.get(f"/v2/{repo}/blobs/{blob.digest}", params=ns).content == blob.data
        # Without ns the default location ("us") is asked, and it has no such image.
        missing = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT})
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert fake.count("GET", "manifest", location="europe-west1") == 1
    assert fake.count("GET", "blob", location="europe-west1") == len(image.blobs)
    assert fake.count(location="us") >= 1
    assert fake.count("GET", "blob", location="us") == 0


def _containerd_socket(dockerd: Dockerd) -> str:
    for candidate in (
        dockerd.base / "exec" / "containerd" / "containerd.sock",
        Path("/run/containerd/containerd.sock"),
    ):
        if candidate.is_socket():
            return str(candidate)
    # dockerd always runs a containerd (its own, or the system's): none is a broken set-up.
    pytest.fail("no containerd socket found next to the test dockerd")


def test_containerd_pulls_through_the_proxy_as_a_mirror(
    gar: tuple[FakeGAR, str], gar_proxy: ProxyProcess, dockerd: Dockerd, tmp_path: Path
) -> None:
    """``ctr content fetch`` with a hosts.toml naming the proxy: containerd adds ``?ns=``.

    The proxy is the configured ``server`` (not just a mirror), so containerd has no
    real host to fall back to: nothing leaves 127.0.0.1.
    """
    require_binaries("ctr")
    fake, _ = gar
    repo = "proj/repo/ctr"
    native = _small_image(repo + "-native", architecture=MACHINE_ARCH)
    other = _small_image(repo + "-other", architecture=OTHER_ARCH)
    index = build_index([other, native])
    fake.put_image("asia-east1", repo, "v1", index)
    fake.reset_counts()
    registry_host = "asia-east1-docker.pkg.dev"
    hosts = tmp_path / "certs.d" / registry_host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "{gar_proxy.url}"\n\n'
        f'[host."{gar_proxy.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    address = _containerd_socket(dockerd)
    namespace = f"garproxy-{os.getpid()}"
    ctr = [shutil.which("ctr") or "ctr", "--address", address, "--namespace", namespace]
    ref = f"{registry_host}/{repo}:v1"
    try:
        run([*ctr, "content", "fetch", "--hosts-dir", str(tmp_path / "certs.d"), ref])
        listed = run([*ctr, "images", "list"]).stdout
        assert ref in listed and index.digest in listed, listed
    finally:
        # The engine is session-wide: leave its containerd as we found it.
        with contextlib.suppress(CommandError):
            run([*ctr, "images", "rm", ref], timeout=30)
            content = run([*ctr, "content", "list", "--quiet"], timeout=30).stdout.split()
            if content:
                run([*ctr, "content", "rm", *content], timeout=30)
            run([*ctr, "namespaces", "rm", namespace], timeout=30)
    # containerd asked the proxy with ?ns=, and the proxy asked asia-east1 only.
    assert fake.count("GET", "manifest", location="asia-east1") >= 1
    assert fake.count("GET", "blob", location="asia-east1") == len(native.blobs)
    assert fake.count(location="us") == 0


# ---------------------------------------------------------------- memory


GIB = 1 << 30
PEAK_RSS_LIMIT = 150 << 20
PIECE = 1 << 20


def _pseudo_random(size: int, hasher: Any, checksum: list[int]) -> Iterator[bytes]:
    """``size`` incompressible bytes as 1 MiB pieces: windows of a 16 MiB random pool
    at random offsets (memcpy speed, not the generator's), hashed on the way out; the
    CRC-32 too, a check four clients can afford (sha256 costs ~2 s per GiB here)."""
    rng = random.Random(1 << 30)
    pool = rng.randbytes(16 * PIECE)
    for offset in range(0, size, PIECE):
        start = rng.randrange(len(pool) - PIECE)
        piece = pool[start : start + min(PIECE, size - offset)]
        hasher.update(piece)
        checksum[0] = zlib.crc32(piece, checksum[0])
        yield piece


def _push_raw_blob(registry: DistributionRegistry, repo: str, size: int) -> tuple[str, int]:
    """Stream ``size`` bytes into the registry (POST, one streamed PATCH, PUT ?digest);
    returns their digest and CRC-32."""
    hasher, checksum = hashlib.sha256(), [0]
    with httpx.Client(timeout=300) as client:
        started = client.post(f"{registry.url}/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        patched = client.patch(
            started.url.join(started.headers["location"]),
            content=_pseudo_random(size, hasher, checksum),
            headers={"Content-Type": mt.OCTET_STREAM},
        )
        assert patched.status_code == 202, patched.text
        digest = f"sha256:{hasher.hexdigest()}"
        location = patched.url.join(patched.headers["location"])
        done = client.put(location.copy_merge_params({"digest": digest}))
        assert done.status_code == 201, done.text
    return digest, checksum[0]


def _stream(url: str, results: list[tuple[int, int] | BaseException]) -> None:
    try:
        checksum, size = 0, 0
        with httpx.stream("GET", url, timeout=60) as response:
            assert response.status_code == 200, response.status_code
            for chunk in response.iter_raw(PIECE):
                checksum = zlib.crc32(chunk, checksum)
                size += len(chunk)
        results.append((size, checksum))
    except BaseException as error:  # reported by the test thread
        results.append(error)


@pytest.mark.slow
def test_memory_stays_flat_while_4_clients_stream_a_cold_1_gib_blob(
    distribution_registry: DistributionRegistry, tmp_path: Path
) -> None:
    repo = "proj/repo/big"
    began = time.monotonic()
    digest, checksum = _push_raw_blob(distribution_registry, repo, GIB)
    pushed = time.monotonic()
    results: list[tuple[int, int] | BaseException] = []
    samples: list[int] = []
    with ProxyProcess(tmp_path / "cache", distribution_registry.url) as proxy:
        idle, cpu = proxy.rss(), proxy.cpu_seconds()
        url = f"{proxy.url}/v2/{repo}/blobs/{digest}"
        clients = [threading.Thread(target=_stream, args=(url, results)) for _ in range(4)]
        for client in clients:
            client.start()
        while any(c.is_alive() for c in clients):
            samples.append(proxy.rss())
            time.sleep(0.05)
        streamed = time.monotonic()
        cpu = proxy.cpu_seconds() - cpu
        peak = proxy.peak_rss()
        metrics = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    print(
        f"\npush {pushed - began:.1f}s, 4 streams {streamed - pushed:.1f}s (proxy CPU {cpu:.1f}s);"
        f" proxy RSS: idle "
        f"{idle >> 20} MiB, max sampled {max(samples) >> 20} MiB, VmHWM {peak >> 20} MiB"
    )
    # Every byte right: the proxy checked the sha256 as it filled, each client the CRC.
    assert results == [(GIB, checksum)] * 4
    assert 'garproxy_upstream_fetches_total{kind="blob"} 1.0' in metrics
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak >> 20} MiB"
