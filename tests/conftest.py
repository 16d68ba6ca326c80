"""Shared fixtures.

Real clients and servers (see ``testkit/realclients.py``): ``distribution_registry``,
``dockerd``, ``podman_runner`` and ``skopeo_runner``. A test using any of them is
marked ``realclient`` automatically, so ``pytest -m "not realclient"`` leaves them out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fakes.gar import FakeGAR
from testkit.realclients import DistributionRegistry, Dockerd, Podman, Skopeo

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


@pytest.fixture
def upstream(fake: FakeGAR) -> Iterator[str]:
    """The test module's ``fake`` GAR on loopback, as the proxy's upstream template."""
    with fake.serve() as url:
        yield url + "/{location}"


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
