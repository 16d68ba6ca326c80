"""The real-client harness works before any proxy is involved: an image pushed into the
CNCF registry comes back through skopeo, podman and docker with the pushed manifest
digest. Each step prints its time (``pytest -s`` shows them)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.images import Image, build_image, make_layer, push_image, write_oci_layout
from testkit.realclients import DistributionRegistry, Dockerd, Podman, Skopeo


@contextlib.contextmanager
def timed(step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"{step}: {time.perf_counter() - start:.3f}s")


def _layers() -> list[bytes]:
    return [make_layer({"etc/motd": b"smoke test\n"}), make_layer(seed=1)]


@pytest.fixture(scope="module")
def oci_image() -> Image:
    return build_image(_layers())


@pytest.fixture(scope="module")
def docker_image() -> Image:
    return build_image(_layers(), fmt="docker")


def test_skopeo_copies_an_oci_layout_in_and_out(
    distribution_registry: DistributionRegistry,
    skopeo_runner: Skopeo,
    oci_image: Image,
    tmp_path: Path,
) -> None:
    layout = write_oci_layout(tmp_path / "in", oci_image, "v1")
    ref = f"docker://{distribution_registry.host}/proj/repo/skopeo:v1"

    with timed("skopeo copy oci: -> registry"):
        skopeo_runner("copy", "--quiet", f"oci:{layout}:v1", ref)
    with timed("skopeo inspect"):
        info = skopeo_runner.inspect(ref)
    with timed("skopeo copy registry -> oci:"):
        skopeo_runner("copy", "--quiet", ref, f"oci:{tmp_path / 'out'}:v1")

    assert info["Digest"] == oci_image.digest
    assert skopeo_runner.inspect(f"oci:{tmp_path / 'out'}:v1")["Digest"] == oci_image.digest


def test_podman_pulls_an_oci_image(
    distribution_registry: DistributionRegistry, podman_runner: Podman, oci_image: Image
) -> None:
    with timed("push_image (oci)"):
        push_image(distribution_registry.url, "proj/repo/podman", "v1", oci_image)
    ref = f"{distribution_registry.host}/proj/repo/podman:v1"

    with timed("podman pull"):
        podman_runner("pull", "--quiet", ref)

    assert podman_runner.image_digest(ref) == oci_image.digest


def test_docker_pulls_a_schema2_image(
    distribution_registry: DistributionRegistry, dockerd: Dockerd, docker_image: Image
) -> None:
    with timed("push_image (docker schema2)"):
        push_image(distribution_registry.url, "proj/repo/docker", "v1", docker_image)
    name = f"{distribution_registry.host}/proj/repo/docker"

    with timed("docker pull (CLI)"):
        dockerd.cli("pull", "--quiet", f"{name}:v1")
    with timed("docker pull (SDK, by digest)"):
        by_digest = dockerd.client.images.pull(f"{name}@{docker_image.digest}")

    assert dockerd.repo_digests(f"{name}:v1") == [f"{name}@{docker_image.digest}"]
    assert f"{name}@{docker_image.digest}" in by_digest.attrs["RepoDigests"]
