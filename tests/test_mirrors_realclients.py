"""dockerd and containerd keep Docker Hub and ghcr.io names; the bytes come from GAR.

A dockerd of our own with ``registry-mirrors`` set to the proxy's Docker Hub mirror
socket runs ``docker pull alpine:3``; containerd's ``ctr`` with a ``hosts.toml`` per
registry fetches ``docker.io/library/alpine:3`` and ``ghcr.io/org/tool:1`` (it adds
``?ns=HOST``). The fake GAR holds them under the mirrors' remote repositories.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_image, make_layer
from testkit.proxyprocess import ProxyProcess
from testkit.realclients import CommandError, Dockerd, run
from tests.conftest import require_binaries
from tests.test_realclients_pull import MACHINE_ARCH, _containerd_socket

HUB_REPO = "proj/dockerhub-remote/library/alpine"
GHCR_REPO = "proj/ghcr-remote/org/tool"


def _image(name: str) -> Image:
    layers = [make_layer({f"{name}/a": name.encode()}), make_layer({f"{name}/b": b"b" * 4096})]
    return build_image(layers, fmt="docker", architecture=MACHINE_ARCH)


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[FakeGAR, Image, Image]]:
    fake = FakeGAR(auth="none")
    alpine, tool = _image("alpine"), _image("tool")
    fake.put_image("us", HUB_REPO, "3", alpine)
    fake.put_image("europe-west1", GHCR_REPO, "1", tool)
    with fake.serve():
        yield fake, alpine, tool


@pytest.fixture(scope="module")
def mirror_proxy(
    seeded: tuple[FakeGAR, Image, Image], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    mirrors = [
        {
            "host": "docker.io",
            "repository": "proj/dockerhub-remote",
            "location": "us",
            "listen": "127.0.0.1:0",
        },
        {"host": "ghcr.io", "repository": "proj/ghcr-remote", "location": "europe-west1"},
    ]
    env = {"GAR_PROXY_ROUTING_MIRRORS": json.dumps(mirrors)}
    work = tmp_path_factory.mktemp("mirror-proxy")
    with ProxyProcess(work / "cache", seeded[0].upstream, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def mirrored_dockerd(mirror_proxy: ProxyProcess) -> Iterator[Dockerd]:
    """A second engine: registry-mirrors is a daemon setting, the session one has none."""
    require_binaries("dockerd", "docker")
    mirror = mirror_proxy.mirror_urls["docker.io"]
    args = [f"--registry-mirror={mirror}", f"--insecure-registry={mirror.removeprefix('http://')}"]
    with Dockerd(extra_args=args) as daemon:
        yield daemon


def test_docker_pull_alpine_comes_from_the_docker_hub_mirror(
    seeded: tuple[FakeGAR, Image, Image], mirror_proxy: ProxyProcess, mirrored_dockerd: Dockerd
) -> None:
    fake, alpine, _ = seeded
    mirrored_dockerd.cli("pull", "--quiet", "alpine:3")
    assert mirrored_dockerd.repo_digests("alpine:3") == [f"alpine@{alpine.digest}"]
    assert fake.count("GET", "blob", path=HUB_REPO) == len(alpine.blobs)


def _write_hosts(certs: Path, host: str, proxy_url: str) -> None:
    # server is the proxy too, so nothing leaves 127.0.0.1 (deploy/mirrors/ names the
    # real registry as server, the fallback when the proxy is down).
    (certs / host).mkdir(parents=True)
    (certs / host / "hosts.toml").write_text(
        f'server = "{proxy_url}"\n\n[host."{proxy_url}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def test_containerd_fetches_docker_hub_and_ghcr_names_through_their_mirrors(
    seeded: tuple[FakeGAR, Image, Image],
    mirror_proxy: ProxyProcess,
    mirrored_dockerd: Dockerd,
    tmp_path: Path,
) -> None:
    require_binaries("ctr")
    fake, alpine, tool = seeded
    certs = tmp_path / "certs.d"
    for host in ("docker.io", "ghcr.io"):
        _write_hosts(certs, host, mirror_proxy.url)
    namespace = f"garproxy-mirrors-{os.getpid()}"
    ctr = [shutil.which("ctr") or "ctr", "--address", _containerd_socket(mirrored_dockerd)]
    ctr += ["--namespace", namespace]
    refs = {"docker.io/library/alpine:3": alpine, "ghcr.io/org/tool:1": tool}
    try:
        for ref in refs:
            run([*ctr, "content", "fetch", "--hosts-dir", str(certs), ref])
        listed = run([*ctr, "images", "list"]).stdout
        for ref, image in refs.items():
            assert ref in listed and image.digest in listed, listed
    finally:
        with contextlib.suppress(CommandError):
            run([*ctr, "images", "rm", *refs], timeout=30)
            content = run([*ctr, "content", "list", "--quiet"], timeout=30).stdout.split()
            if content:
                run([*ctr, "content", "rm", *content], timeout=30)
            run([*ctr, "namespaces", "rm", namespace], timeout=30)
    assert fake.count("GET", "manifest", location="europe-west1") >= 1
    # Every registry request in that location was for the ghcr image (its blob GETs'
    # signed downloads name only the GAR repository).
    registry = fake.count(location="europe-west1") - fake.count(
        None, "download", location="europe-west1"
    )
    assert fake.count(path=GHCR_REPO) == registry
