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


def test_dry_run_with_build_args_env_files_and_the_environment(
    seeded: tuple[FakeGAR, dict[str, Image | Index]], tmp_path: Path
) -> None:
    """``--build-arg`` over the Dockerfile's ARG defaults (TOOLS_IMAGE has none);
    ``--env-file`` instead of the compose file's ``.env``, the environment over both."""
    fake, _ = seeded
    fake.reset_counts()
    env_file = tmp_path / "prod.env"
    env_file.write_text("REDIS_VERSION=6\nWEB_IMAGE='us-docker.pkg.dev/proj/repo/web:2.0.0'\n")
    files = [str(FILES / "app" / "Dockerfile"), str(FILES / "compose.yaml")]
    result = run_cli(
        tmp_path / "cache", fake.upstream, "warm", "-f", *files, "--dry-run",
        "--build-arg", "PYTHON_VERSION=3.13", "--build-arg", "TOOLS_IMAGE=ghcr.io/org/tools:5",
        "--env-file", str(env_file), env={**ENV, "REDIS_VERSION": "7.4-alpine"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"us-docker.pkg.dev/{HUB}/library/python:3.13-slim",
        f"europe-west1-docker.pkg.dev/{GHCR}/org/tools:5",
        f"europe-west1-docker.pkg.dev/{GHCR}/org/linter:3",
        "us-docker.pkg.dev/proj/repo/web:2.0.0",  # from the --env-file, not the default
        f"us-docker.pkg.dev/{HUB}/library/redis:7.4-alpine",  # the environment wins
    ]
    (problem,) = result.stderr.splitlines()  # TOOLS_IMAGE and the redis tag are known now
    assert problem.startswith("cannot warm quay.io/team/search:3 (")
    assert "compose.yaml: services.search): 'quay.io' is not a configured mirror" in problem
    missing = run_cli(tmp_path / "cache", fake.upstream, "warm", "-f", *files, "--dry-run",
                      "--env-file", str(tmp_path / "nope.env"), env=ENV)  # fmt: skip
    assert missing.returncode == 1
    assert "nope.env: cannot read it" in missing.stderr and not missing.stdout
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


def test_scheduled_warm_takes_build_args_and_env_files(
    seeded: tuple[FakeGAR, dict[str, Image | Index]], tmp_path: Path
) -> None:
    fake, images = seeded
    env_file = tmp_path / "ci.env"
    env_file.write_text("REDIS_VERSION=7-alpine\n")
    compose = tmp_path / "compose.yaml"  # no .env beside it: the env file gives the tag
    compose.write_text("services:\n  cache: {image: 'redis:${REDIS_VERSION}'}\n")
    entry = WarmSchedule(
        files=(str(FILES / "app" / "Dockerfile"), str(compose)),
        build_args=(("TOOLS_IMAGE", "busybox:1.36"),), env_files=(str(env_file),),
    )  # fmt: skip
    settings = proxy_settings(tmp_path, fake.upstream, routing__mirrors=json.dumps(MIRRORS))
    with run_proxy(settings) as proxy:
        fake.reset_counts()
        assert proxy.call(warm_once(proxy.services, entry)) == 0
        hub = [f"us-docker.pkg.dev/{HUB}/library/{name}"
               for name in ("python:3.12-slim", "busybox:1.36", "redis:7-alpine")]  # fmt: skip
        linter = f"europe-west1-docker.pkg.dev/{GHCR}/org/linter:3"
        assert sorted(_tag_gets(fake)) == sorted([*hub, linter])
        for key in (f"{HUB}/library/busybox:1.36", f"{HUB}/library/redis:7-alpine"):
            image = images[key]
            assert isinstance(image, Image)
            assert all(proxy.services.cache.size(Digest.parse(b.digest)) for b in image.blobs)


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
    config.write_text(
        '[[warm]]\nfiles = ["Dockerfile"]\nbuild_args = {BASE = "debian:13", V = "1"}\n'
        'env_files = ["ci.env"]\n'
    )
    (entry,) = load_settings(config, env={}).cache.warm
    assert (entry.build_args, entry.env_files) == ((("BASE", "debian:13"), ("V", "1")), ("ci.env",))
    assert "debian:13" not in str(entry)  # a build arg may be a secret: never printed
    for bad, reason in [
        ('files = ["D"]\nbuild_args = {V = 1}', "build_args must be a table of strings"),
        ('files = ["D"]\nbuild_args = ["V=1"]', "build_args must be a table of strings"),
        ('files = ["D"]\nenv_files = "ci.env"', "env_files must be a list of paths"),
        ('image = "p/r/i"\nbuild_args = {V = "1"}', "build_args and env_files are for files"),
    ]:
        config.write_text(f"[[warm]]\n{bad}\n")
        with pytest.raises(ConfigError, match=reason):
            load_settings(config, env={})
