"""Shared fixtures.

The fake GAR and the proxy in front of it, as factories so that each test says how it
configures them: ``fake_gar(**knobs)`` is a served ``FakeGAR(**knobs)`` (its ``url``, and
``upstream``, the proxy's template for it); ``proxy(upstream_url, **settings)`` is a
``RunningProxy`` (``settings`` as for ``proxy_settings``). Both stop at teardown. A
module whose tests share one setup names it ``fake`` (``fake_gar(...)`` with its knobs)
and ``running`` (``proxy(fake.upstream, ...)``).

``fake_gcs`` is a Cloud Storage emulator for the module (``testkit/fakes/gcs.py``).

Real clients and servers (see ``testkit/realclients.py``): ``distribution_registry``,
``dockerd``, ``podman_runner`` and ``skopeo_runner``. A test using any of them is
marked ``realclient`` automatically, so ``pytest -m "not realclient"`` leaves them out.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from testkit.doccommands import documented
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gcs import FakeGCS
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.realclients import DistributionRegistry, Dockerd, Podman, Skopeo, run

REALCLIENT_FIXTURES = {"distribution_registry", "dockerd", "podman_runner", "skopeo_runner"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REALCLIENT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realclient)


def require_binaries(*names: str) -> None:
    """Skip when a client is not installed, but fail under CI, where scripts/test.sh
    installs them all and a missing one means a broken setup, not an optional test."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        reason = f"not installed: {', '.join(missing)} (scripts/test.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


class FakeGarFactory(Protocol):
    def __call__(self, **knobs: Any) -> FakeGAR: ...


class ProxyFactory(Protocol):
    def __call__(self, upstream_url: str, **keys: Any) -> RunningProxy: ...


@pytest.fixture
def fake_gar() -> Iterator[FakeGarFactory]:
    """``fake_gar(**knobs)``: a ``FakeGAR(**knobs)`` served on 127.0.0.1 until teardown."""
    with contextlib.ExitStack() as stack:

        def start(**knobs: Any) -> FakeGAR:
            fake = FakeGAR(**knobs)
            stack.enter_context(fake.serve())
            return fake

        yield start


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """``proxy(upstream_url, **keys)``: the app under uvicorn on 127.0.0.1 until teardown.

    ``keys`` are settings as ``proxy_settings`` takes them (``cache__tag_ttl="0"``); the
    cache is ``tmp_path``'s, so one proxy per test. A test that restarts the proxy, or
    stops it before its end, uses ``run_proxy`` itself."""
    with contextlib.ExitStack() as stack:

        def start(upstream_url: str, **keys: Any) -> RunningProxy:
            settings = proxy_settings(tmp_path, upstream_url, **keys)
            return stack.enter_context(run_proxy(settings))

        yield start


@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    """A Cloud Storage emulator (``testkit.fakes.gcs``) for the module; a test makes its
    own bucket (``fake_gcs.create_bucket``)."""
    with FakeGCS.running(tmp_path_factory.mktemp("gcs")) as gcs:
        yield gcs


@pytest.fixture(scope="module")
def distribution_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DistributionRegistry]:
    """An empty CNCF distribution registry on 127.0.0.1, shared by one test module."""
    require_binaries("docker-registry")
    with DistributionRegistry(tmp_path_factory.mktemp("registry")) as registry:
        yield registry


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """One private Docker engine per session (it takes a second or two to start);
    call ``remove_all_images()`` before a pull that must be cold."""
    require_binaries("dockerd", "docker")
    with Dockerd() as daemon:
        yield daemon


IMAGE_TAG = "gar-proxy:under-test"
IMAGE_BUILD_TIMEOUT = 600.0


@pytest.fixture(scope="session")
def image(dockerd: Dockerd) -> str:
    """gar-proxy's container image, built once per session on the private dockerd by the
    command deploy/README.md gives (its tag replaced): ``scripts/build-image.sh``. The first
    run on a machine also makes the base with mmdebstrap (~2 minutes)."""
    require_binaries("mmdebstrap")
    command = documented("deploy/README.md", "scripts/build-image.sh")
    # The compose recipe builds the same way (it is not run twice).
    assert documented("deploy/compose/compose.yaml", "scripts/build-image.sh") == command
    words = shlex.split(command.replace("gar-proxy:latest", IMAGE_TAG))
    env = {
        "DOCKER_HOST": dockerd.host,
        "DOCKER_CONFIG": str(dockerd.base / "cli-config"),
        "PYTHON": sys.executable,
    }
    repo = Path(__file__).resolve().parent.parent
    run([str(repo / words[0]), *words[1:]], env=env, timeout=IMAGE_BUILD_TIMEOUT)
    return IMAGE_TAG


@pytest.fixture
def podman_runner(tmp_path: Path) -> Iterator[Podman]:
    """podman with its own empty image store."""
    require_binaries("podman")
    with Podman(tmp_path / "podman") as podman:
        yield podman


@pytest.fixture
def skopeo_runner(tmp_path: Path) -> Skopeo:
    require_binaries("skopeo")
    return Skopeo(tmp_path / "skopeo")
