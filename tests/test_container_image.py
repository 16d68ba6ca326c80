"""The container image, built and run the documented way, pulls for docker.

``scripts/build-image.sh`` builds it on the session's private dockerd exactly as a user
would: the base made by mmdebstrap and ``docker import`` (its tarball cached under
``~/.cache/gar-proxy/base-image``, so only the first run on a machine pays ~2 minutes),
the wheelhouse made on the host, ``docker build --network=none``. testcontainers runs it
with the credentials file mounted as the Dockerfile says (0600, owned by uid 10001,
read-only), against a fake GAR that takes only tokens the fake Google OAuth endpoint
issued for that key; docker pulls through it and gets the upstream's digest.

The private daemon has no bridge network (``--bridge=none``), so the container shares
the host's network and the proxy listens on a free loopback port, set the documented
way (``GAR_PROXY_LISTEN``), which the image's HEALTHCHECK must follow to turn healthy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HealthcheckWaitStrategy

from testkit.fakes.gar import FakeGAR
from testkit.fakes.google import FakeOAuth
from testkit.images import build_image, make_layer
from testkit.realclients import Dockerd, free_port, run
from tests.conftest import require_binaries

# The first run on a machine also makes the base (mmdebstrap, ~2 minutes).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
IMAGE_TAG = "gar-proxy:under-test"
IMAGE_UID = 10001
KEY_IN_CONTAINER = "/run/secrets/gar-key.json"
BUILD_TIMEOUT = 600.0
HEALTHY_TIMEOUT = 60


class _IssuedTokens(set[str]):
    """The fake GAR's accepted tokens: exactly those the fake OAuth endpoint issued."""

    def __init__(self, oauth: FakeOAuth) -> None:
        super().__init__()
        self.oauth = oauth

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.oauth.is_valid(token)


@pytest.fixture(scope="module")
def image(dockerd: Dockerd) -> str:
    require_binaries("mmdebstrap")
    env = {
        "DOCKER_HOST": dockerd.host,
        "DOCKER_CONFIG": str(dockerd.base / "cli-config"),
        "PYTHON": sys.executable,
    }
    run([str(REPO / "scripts/build-image.sh"), IMAGE_TAG], env=env, timeout=BUILD_TIMEOUT)
    return IMAGE_TAG


def test_the_image_declares_its_user_port_volume_and_healthcheck(
    image: str, dockerd: Dockerd
) -> None:
    config = dockerd.client.images.get(image).attrs["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert set(config["ExposedPorts"]) == {"5000/tcp"}
    assert set(config["Volumes"]) == {"/cache"}
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "GAR_PROXY_LISTEN=0.0.0.0:5000" in config["Env"]


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    issuer = FakeOAuth()
    with issuer.serving():
        yield issuer


def _key_file(path: Path, info: dict[str, str], uid: int) -> Path:
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    os.chown(path, uid, uid)
    return path


def test_the_image_runs_as_documented_and_docker_pulls_through_it(
    image: str, dockerd: Dockerd, oauth: FakeOAuth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # testcontainers' reaper is an image from Docker Hub; the fixture stops what it starts.
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    key = _key_file(tmp_path / "key.json", oauth.service_account().info, IMAGE_UID)
    root_key = _key_file(tmp_path / "root-key.json", oauth.service_account().info, 0)
    fake = FakeGAR(auth="gcp")
    fake.access_tokens = _IssuedTokens(oauth)
    app = build_image([make_layer({"app/bin": b"hello"}), make_layer(size=1 << 20, seed=5)])
    fake.put_image("us", "proj/repo/app", "v1", app)
    port = free_port()

    with fake.serve() as gar_url:
        container = (
            DockerContainer(
                image,
                docker_client_kw={"environment": {"DOCKER_HOST": dockerd.host}},
                network_mode="host",
                # The image's own check, polled faster than its 30 s for the test.
                healthcheck={"interval": 500_000_000},
            )
            .with_envs(
                GAR_PROXY_LISTEN=f"127.0.0.1:{port}",
                GAR_PROXY_UPSTREAM_URL=gar_url + "/{location}",
                GAR_PROXY_RESOLVE_LOCATIONS="false",
                GOOGLE_APPLICATION_CREDENTIALS=KEY_IN_CONTAINER,
            )
            .with_volume_mapping(str(key), KEY_IN_CONTAINER, "ro")
            .with_volume_mapping(str(root_key), "/run/secrets/root-key.json", "ro")
            .waiting_for(HealthcheckWaitStrategy().with_startup_timeout(HEALTHY_TIMEOUT))
        )
        with container:
            dockerd.cli("pull", "--quiet", f"127.0.0.1:{port}/proj/repo/app:v1")
            digests = dockerd.repo_digests(f"127.0.0.1:{port}/proj/repo/app:v1")
            cached = container.exec(["ls", "/cache/blobs/sha256"])
            unreadable = container.exec(["python", "-c", "open('/run/secrets/root-key.json')"])
            mounts = container.get_wrapped_container().attrs["Mounts"]
            user = container.exec(["id", "-u"]).output.decode().strip()

    assert digests == [f"127.0.0.1:{port}/proj/repo/app@{app.digest}"]
    assert oauth.token_requests >= 1  # the proxy signed in with the mounted key
    assert user == str(IMAGE_UID)
    assert cached.exit_code == 0 and cached.output.split(), "nothing cached under /cache"
    assert any(m["Destination"] == "/cache" and m["Type"] == "volume" for m in mounts)
    # Why the docs say to chown the key to 10001: root's 0600 file is closed to the proxy.
    assert unreadable.exit_code != 0
    assert b"PermissionError" in unreadable.output
