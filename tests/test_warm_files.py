"""``gar-proxy warm -f``: the images a directory of real-world-shaped files names (a
rendered Helm chart with an init container and a hook Job, a Compose file with a
``.env``, a GitHub Actions workflow, a multi-stage Dockerfile; ``tests/data/warm_files``)
are resolved through the proxy's naming, mirrors included, printed by ``--dry-run``
and warmed each once; a real dockerd pull of them afterwards touches no upstream
blob. ``[[warm]] files`` does the same on a schedule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_settings
from proxy.config.values import WarmSchedule
from proxy.oci.digest import Digest
from proxy.services.scheduled_warm import warm_once
from testkit.fakes.gar import FakeGAR
from testkit.images import Image, Index, build_image, build_index, make_layer
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.proxyprocess import ProxyProcess, run_cli
from testkit.realclients import Dockerd
from tests.test_realclients_pull import MACHINE_ARCH, OTHER_ARCH

FILES = Path(__file__).parent / "data" / "warm_files"
HUB, GHCR = "proj/dockerhub-remote", "proj/ghcr-remote"
MIRRORS = [
    {"host": "docker.io", "repository": HUB, "location": "us"},
    {"host": "ghcr.io", "repository": GHCR, "location": "europe-west1"},
]
ENV = {"GAR_PROXY_ROUTING_MIRRORS": json.dumps(MIRRORS)}
# (location, GAR path, tag): what the files name, as the proxy asks GAR for it.
IMAGES = [
    ("us", "proj/repo/web", "1.4.2"),
    ("us", f"{HUB}/library/redis", "7-alpine"),
    ("us", f"{HUB}/library/python", "3.12-slim"),
    ("us", f"{HUB}/library/postgres", "16"),
    ("europe-west1", f"{GHCR}/org/linter", "3"),
    ("us", f"{HUB}/library/busybox", "1.36"),
    ("europe-west1", f"{GHCR}/org/proxy-sidecar", "2"),
    ("us", "proj/repo/migrate", "1.4.2"),
]
EXPECTED = [f"{location}-docker.pkg.dev/{path}:{tag}" for location, path, tag in IMAGES]
# How a client names each through the proxy (docker pull 127.0.0.1:PORT/NAME).
CLIENT_NAMES = [
    "us-docker.pkg.dev/proj/repo/web:1.4.2",
    "docker.io/library/redis:7-alpine",
    "docker.io/library/python:3.12-slim",
    "docker.io/library/postgres:16",
    "ghcr.io/org/linter:3",
    "docker.io/library/busybox:1.36",
    "ghcr.io/org/proxy-sidecar:2",
    "us-docker.pkg.dev/proj/repo/migrate:1.4.2",
]
UNRESOLVED = {
    "${{ matrix.image }}": "a GitHub Actions expression",
    "${TOOLS_IMAGE}": "ARG TOOLS_IMAGE has no default",
    "quay.io/team/search:3": "'quay.io' is not a configured mirror",
}


def _seed(fake: FakeGAR) -> dict[str, Image | Index]:
    base = make_layer({"etc/os-release": b"ID=test\n"})  # shared: fetched once
    seeded: dict[str, Image | Index] = {}
    for location, path, tag in IMAGES:
        own = make_layer({f"{path}/{tag}": path.encode() * 40})
        image: Image | Index = build_image([base, own], fmt="docker", architecture=MACHINE_ARCH)
        if path.endswith("/python"):  # an index: the host's platform is warmed
            other = build_image([base, make_layer({"other": b"arch"})], architecture=OTHER_ARCH)
            image = build_index([build_image([base, own], architecture=MACHINE_ARCH), other])
        fake.put_image(location, path, tag, image)
        seeded[f"{path}:{tag}"] = image
    return seeded


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[FakeGAR, dict[str, Image | Index]]]:
    fake = FakeGAR(auth="none")
    images = _seed(fake)
    with fake.serve():
        yield fake, images


def _tag_gets(fake: FakeGAR) -> list[str]:
    """Manifest GETs by tag upstream saw, as LOCATION/PATH:TAG."""
    found = []
    for request in fake.requests:
        if request.kind == "manifest" and request.method == "GET" and "sha256:" not in request.path:
            path = request.path.split("/v2/", 1)[1].replace("/manifests/", ":")
            found.append(f"{request.location}-docker.pkg.dev/{path}")
    return found


def test_dry_run_prints_what_the_proxy_will_ask_for_and_pulls_nothing(
    seeded: tuple[FakeGAR, dict[str, Image | Index]], tmp_path: Path
) -> None:
    fake, _ = seeded
    fake.reset_counts()
    result = run_cli(tmp_path / "cache", fake.upstream, "warm", "-f", str(FILES), "--dry-run",
                     env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == EXPECTED  # each once, in the order first met
    problems = result.stderr.splitlines()
    for text, reason in UNRESOLVED.items():
        assert any(line.startswith(f"cannot warm {text} (") and reason in line for line in problems)
    assert any("skipped" in line and "templates/deployment.yaml" in line for line in problems)
    assert len(problems) == len(UNRESOLVED) + 1, problems
    assert fake.count() == 0


def test_warm_from_files_then_a_docker_pull_touches_no_upstream_blob(
    seeded: tuple[FakeGAR, dict[str, Image | Index]], tmp_path: Path, dockerd: Dockerd
) -> None:
    fake, images = seeded
    cache = tmp_path / "cache"
    with ProxyProcess(cache, fake.upstream, env=ENV) as proxy:
        fake.reset_counts()
        warmed = run_cli(cache, fake.upstream, "warm", "-f", str(FILES), env=ENV)
        assert warmed.returncode == 0, warmed.stderr
        assert "8 of 8 image(s) warmed from 6 file(s); 4 reference(s)" in warmed.stdout
        assert sorted(_tag_gets(fake)) == sorted(EXPECTED)  # exactly the listed ones, once
        base_gets = fake.count("GET", "blob", path="/blobs/" + _base_digest(images))
        assert base_gets == 1  # a layer all of them share: fetched once, checked per repository
        fake.reset_counts()
        dockerd.remove_all_images()
        host = proxy.url.removeprefix("http://")
        for name in CLIENT_NAMES:
            dockerd.cli("pull", "--quiet", f"{host}/{name}")
        assert fake.count("GET", "blob") == 0, fake.requests
        assert fake.count("HEAD", "blob") == 0
        pulled = {name: dockerd.repo_digests(f"{host}/{name}") for name in CLIENT_NAMES}
        for (_, path, tag), name in zip(IMAGES, CLIENT_NAMES, strict=True):
            digest = images[f"{path}:{tag}"].digest
            assert pulled[name] == [f"{host}/{name.rsplit(':', 1)[0]}@{digest}"]
    dockerd.remove_all_images()


def _base_digest(images: dict[str, Image | Index]) -> str:
    first = images["proj/repo/web:1.4.2"]
    assert isinstance(first, Image)
    return first.layers[0].digest


def test_scheduled_warm_reads_files_too(
    seeded: tuple[FakeGAR, dict[str, Image | Index]], tmp_path: Path
) -> None:
    fake, images = seeded
    entry = WarmSchedule(files=(str(FILES / "chart" / "rendered.yaml"),), interval=3600.0)
    settings = proxy_settings(tmp_path, fake.upstream, routing__mirrors=json.dumps(MIRRORS))
    with run_proxy(settings) as proxy:
        assert proxy.call(warm_once(proxy.services, entry)) == 0
        cache = proxy.services.cache
        for key in ("proj/repo/web:1.4.2", "proj/repo/migrate:1.4.2",
                    f"{HUB}/library/busybox:1.36", f"{GHCR}/org/proxy-sidecar:2"):  # fmt: skip
            image = images[key]
            assert isinstance(image, Image)
            assert all(cache.size(Digest.parse(b.digest)) for b in image.blobs), key
        warms = proxy.services.metrics.registry.get_sample_value
        assert warms("garproxy_scheduled_warms_total", {"outcome": "ok"}) == 4


def test_warm_entries_take_files_and_check_them(tmp_path: Path) -> None:
    config = tmp_path / "gar-proxy.toml"
    config.write_text('[[warm]]\nfiles = ["deploy/", "Dockerfile"]\ninterval = "30m"\n')
    (entry,) = load_settings(config, env={}).cache.warm
    assert (entry.image, entry.files, entry.interval) == ("", ("deploy/", "Dockerfile"), 1800.0)
    assert str(entry) == "images in deploy/, Dockerfile every 1800s"
    config.write_text("[[warm]]\nfiles = [1]\n")
    with pytest.raises(ConfigError, match="warm files must be a list of paths"):
        load_settings(config, env={})
    config.write_text('[[warm]]\ninterval = "1h"\n')
    with pytest.raises(ConfigError, match=r"needs an image .* or files"):
        load_settings(config, env={})
