"""Other registries' names through GAR remote repositories (``[[mirrors]]``), over HTTP.

The real dockerd and containerd pulls are in ``test_mirrors_realclients.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import ConfigError, load_settings
from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
MIRRORS: list[dict[str, Any]] = [
    {
        "host": "registry-1.docker.io",  # an alias: the table knows it as docker.io
        "repository": "proj/dockerhub-remote",
        "location": "us",
        "listen": "127.0.0.1:0",
    },
    {"host": "ghcr.io", "repository": "proj/ghcr-remote", "location": "europe-west1"},
]


def _image(name: str) -> Image:
    return build_image([make_layer({name: name.encode()})])


@pytest.fixture
def seeded(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> tuple[FakeGAR, RunningProxy, Image, Image]:
    fake = fake_gar(auth="none")
    alpine, tool = _image("alpine"), _image("tool")
    fake.put_image("us", "proj/dockerhub-remote/library/alpine", "3", alpine)
    fake.put_image("europe-west1", "proj/ghcr-remote/org/tool", "1", tool)
    fake.put_image("us", "proj/repo/app", "1", _image("app"))
    return fake, proxy(fake.upstream, routing__mirrors=MIRRORS), alpine, tool


def _digest(base: str, path: str, **params: str) -> str:
    got = httpx.get(f"{base}/v2/{path}", params=params, headers=ACCEPT, timeout=30)
    assert got.status_code == 200, (path, params, got.text)
    return got.headers["docker-content-digest"]


def test_every_spelling_of_a_docker_hub_name_reads_the_mirrors_repository(
    seeded: tuple[FakeGAR, RunningProxy, Image, Image],
) -> None:
    fake, running, alpine, _ = seeded
    main, mirror = running.url, running.mirror_url("docker.io")
    spellings = [
        (main, "docker.io/library/alpine/manifests/3", {}),
        (main, "docker.io/alpine/manifests/3", {}),  # Docker Hub's library/ rule
        (main, "index.docker.io/library/alpine/manifests/3", {}),
        (main, "library/alpine/manifests/3", {"ns": "docker.io"}),  # containerd
        (mirror, "library/alpine/manifests/3", {}),  # dockerd's registry-mirrors
        (mirror, "alpine/manifests/3", {}),
        (main, "proj/dockerhub-remote/library/alpine/manifests/3", {}),  # the GAR path
    ]
    for base, path, params in spellings:
        assert _digest(base, path, **params) == alpine.digest
    for blob in alpine.blobs:
        got = httpx.get(f"{mirror}/v2/library/alpine/blobs/{blob.digest}", timeout=30)
        assert got.content == blob.data
    # One cache entry behind all of them: GAR was asked for the tag once, in "us".
    assert fake.count("GET", "manifest") == 1
    assert fake.count(location="us") == fake.count()


def test_a_second_mirror_works_side_by_side(
    seeded: tuple[FakeGAR, RunningProxy, Image, Image],
) -> None:
    fake, running, alpine, tool = seeded
    assert _digest(running.url, "ghcr.io/org/tool/manifests/1") == tool.digest
    assert _digest(running.url, "org/tool/manifests/1", ns="ghcr.io") == tool.digest
    assert _digest(running.url, "docker.io/library/alpine/manifests/3") == alpine.digest
    assert fake.count("GET", "manifest", location="europe-west1") == 1
    # The Docker Hub mirror's own socket is Docker Hub's, whatever the name looks like.
    missing = httpx.get(f"{running.mirror_url('docker.io')}/v2/org/tool/manifests/1", timeout=30)
    assert missing.status_code == 404
    assert fake.count(path="/v2/proj/dockerhub-remote/org/tool/manifests/1") >= 1


def test_bare_gar_paths_keep_their_meaning_and_unknown_registries_are_refused(
    seeded: tuple[FakeGAR, RunningProxy, Image, Image],
) -> None:
    fake, running, _, _ = seeded
    assert _digest(running.url, "proj/repo/app/manifests/1")
    fake.reset_counts()
    for path, code in [
        ("quay.io/org/tool/manifests/1", "NAME_UNKNOWN"),
        ("library/alpine/manifests/3", "NAME_INVALID"),  # bare Docker Hub name, main socket
    ]:
        got = httpx.get(f"{running.url}/v2/{path}", headers=ACCEPT, timeout=30)
        error = got.json()["errors"][0]
        assert (got.status_code in (400, 404), error["code"]) == (True, code), got.text
        assert "docker.io -> proj/dockerhub-remote" in error["message"]
        assert "ghcr.io -> proj/ghcr-remote" in error["message"]
    assert fake.count() == 0


def test_mirrors_are_read_from_top_level_tables_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "gar-proxy.toml"
    config.write_text(
        '[cache]\ntag_ttl = "5s"\n\n[[mirrors]]\nhost = "index.docker.io"\n'
        'repository = "p/hub"\nlisten = "127.0.0.1:5001"\n'
    )
    (mirror,) = load_settings(config, env={}).routing.mirrors
    assert (mirror.host, mirror.prefix, mirror.location, mirror.listen) == (
        "docker.io", "p/hub", None, ("127.0.0.1", 5001)
    )  # fmt: skip
    env = {"GAR_PROXY_ROUTING_MIRRORS": "docker.io=p/hub@us,ghcr.io=p/ghcr@europe-west1"}
    hosts = [(m.host, m.location) for m in load_settings(None, env=env).routing.mirrors]
    assert hosts == [("docker.io", "us"), ("ghcr.io", "europe-west1")]
    for bad in ["docker.io=hub", "docker.io=p/hub,docker.io=p/other", "ghcr.io=p/g@mars"]:
        with pytest.raises(ConfigError, match=r"routing\.mirrors"):
            load_settings(None, env={"GAR_PROXY_ROUTING_MIRRORS": bad})
    clash = {"server.listen": "127.0.0.1:5001"}
    with pytest.raises(ConfigError, match="listen"):
        load_settings(config, env={}, overrides=clash)
