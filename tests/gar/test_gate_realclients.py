"""Real clients through the gated proxy: a CRITICAL finding stops ``skopeo copy`` and
``docker pull`` with the gate's message; an allow-listed one lets them through."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.images import Image, build_image, make_layer
from testkit.realclients import CommandError, Dockerd, Skopeo
from tests.conftest import ProxyFactory
from tests.gar.gatekit import Upstreams, upstreams

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
CVE = "CVE-2024-3094"


@pytest.fixture
def up() -> Iterator[Upstreams]:
    with upstreams() as served:
        yield served


def vulnerable(up: Upstreams, repo: str) -> Image:
    image = build_image([make_layer({f"{repo}/a": repo.encode()})], architecture=ARCH)
    up.gar.put_image("us", repo, "v1", image)
    url = up.resource_url(repo, image.digest)
    up.analysis.set_discovery(url, "FINISHED_SUCCESS")
    up.analysis.add_vulnerability(url, CVE, "CRITICAL", "xz-utils", "5.6.0", "5.6.1", 10.0)
    return image


def test_skopeo_copy_fails_with_the_gate_message_unless_allow_listed(
    up: Upstreams, proxy: ProxyFactory, skopeo_runner: Skopeo, tmp_path: Path
) -> None:
    repo = "proj/repo/skopeo-gated"
    vulnerable(up, repo)
    gated = proxy(up.upstream, **up.gate_settings())
    source = f"docker://{gated.url.removeprefix('http://')}/{repo}:v1"
    with pytest.raises(CommandError) as failed:
        skopeo_runner("copy", source, f"oci:{tmp_path / 'out'}:v1")
    said = failed.value.stderr
    assert "denied" in said.lower() and CVE in said and "vulnerability_gate.allow" in said
    listed = proxy(up.upstream, **up.gate_settings(allow=CVE), cache__dir=str(tmp_path / "c2"))
    source = f"docker://{listed.url.removeprefix('http://')}/{repo}:v1"
    skopeo_runner("copy", source, f"oci:{tmp_path / 'out'}:v1")


def test_docker_pull_fails_with_the_gate_message(
    up: Upstreams, proxy: ProxyFactory, dockerd: Dockerd
) -> None:
    repo = "proj/repo/docker-gated"
    vulnerable(up, repo)
    gated = proxy(up.upstream, **up.gate_settings())
    dockerd.remove_all_images()
    with pytest.raises(CommandError) as failed:
        dockerd.cli("pull", f"{gated.url.removeprefix('http://')}/{repo}:v1")
    said = failed.value.stderr + failed.value.output
    assert CVE in said and "xz-utils 5.6.0" in said and "vulnerability_gate.allow" in said
    assert up.gar.count("GET", "blob") == 0  # stopped before a layer moved
