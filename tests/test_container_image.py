"""The container image, built and run the documented way, pulls for docker; the
documented ``docker run`` commands and the compose service start and turn healthy as
written; with TLS on, the image's own health check passes.

``scripts/build-image.sh`` builds it on the session's private dockerd exactly as a user
would: the base made by mmdebstrap and ``docker import`` (its tarball cached under
``~/.cache/gar-proxy/base-image``, so only the first run on a machine pays ~2 minutes),
the wheelhouse made on the host, ``docker build --network=none``. testcontainers runs it
with the credentials file mounted as the Dockerfile says (0600, owned by uid 10001,
read-only), against a fake GAR that takes only tokens the fake Google OAuth endpoint
issued for that key; docker pulls through it and gets the upstream's digest.

The private daemon has no bridge network (``--bridge=none``), so the pulling test's
container shares the host's network and the proxy listens on a free loopback port, set
the documented way (``GAR_PROXY_SERVER_LISTEN``), which the image's HEALTHCHECK must follow to
turn healthy. The documented commands publish a port (``-p 127.0.0.1:5000:5000``), which
needs a bridge: they run with ``--network none`` instead, so the proxy binds
``0.0.0.0:5000`` in a namespace of its own exactly as documented, and its HEALTHCHECK
runs inside it. Every other word of the command is as written (paths, names and the
image tag filled in; ``sudo`` dropped, the tests run as root), plus a faster health
interval than the image's 30 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import yaml
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HealthcheckWaitStrategy

from testkit.doccommands import documented
from testkit.fakes.gar import FakeGAR
from testkit.fakes.google import FakeOAuth
from testkit.images import build_image, make_layer
from testkit.realclients import CommandError, Dockerd, free_port
from tests.conftest import IMAGE_TAG

# The first run on a machine also makes the base (mmdebstrap, ~2 minutes).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
IMAGE_UID = 10001
KEY_IN_CONTAINER = "/run/secrets/gar-key.json"
HEALTHY_TIMEOUT = 60


class _IssuedTokens(set[str]):
    """The fake GAR's accepted tokens: exactly those the fake OAuth endpoint issued."""

    def __init__(self, oauth: FakeOAuth) -> None:
        super().__init__()
        self.oauth = oauth

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.oauth.is_valid(token)


def test_the_image_declares_its_user_port_volume_and_healthcheck(
    image: str, dockerd: Dockerd
) -> None:
    config = dockerd.client.images.get(image).attrs["Config"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert set(config["ExposedPorts"]) == {"5000/tcp"}
    assert set(config["Volumes"]) == {"/cache"}
    assert config["Healthcheck"]["Test"] == ["CMD", "gar-proxy", "healthcheck"]
    assert "GAR_PROXY_SERVER_LISTEN=0.0.0.0:5000" in config["Env"]


def test_the_image_holds_only_the_server_extras_it_runs(image: str, dockerd: Dockerd) -> None:
    """httptools (the zero-copy protocol) and uvloop, not uvicorn[standard]'s others;
    PyYAML is there for ``warm -f`` (a dependency of ours, not uvicorn's extra)."""
    probe = "import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) for m in "
    probe += "('httptools', 'uvloop', 'websockets', 'watchfiles', 'dotenv', 'yaml')}))"
    out = dockerd.cli("run", "--rm", "--network", "none", "--entrypoint", "python3", image,
                      "-c", probe).stdout  # fmt: skip
    assert json.loads(out) == {"httptools": True, "uvloop": True, "websockets": False,
                               "watchfiles": False, "dotenv": False, "yaml": True}  # fmt: skip


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
                GAR_PROXY_SERVER_LISTEN=f"127.0.0.1:{port}",
                GAR_PROXY_UPSTREAM_URL=gar_url + "/{location}",
                GAR_PROXY_ROUTING_RESOLVE_LOCATIONS="false",
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


# ---------------------------------------------------------------- documented commands


def _container_health(dockerd: Dockerd, name: str) -> str:
    state = json.loads(dockerd.cli("inspect", "--format", "{{json .State}}", name).stdout)
    if not state["Running"]:
        logs = dockerd.cli("logs", name).stdout + dockerd.cli("logs", name).stderr
        raise AssertionError(f"{name} exited ({state['ExitCode']}): {logs[-2000:]}")
    return str(state.get("Health", {}).get("Status", "none"))


def _wait_healthy(dockerd: Dockerd, name: str) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    while (status := _container_health(dockerd, name)) != "healthy":
        # The daemon's own health state: there is no event to wait on from here.
        assert time.monotonic() < deadline, f"{name}: still {status}"
        time.sleep(0.2)


@contextlib.contextmanager
def _cleanup(dockerd: Dockerd, name: str, volume: str) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(CommandError):
            dockerd.cli("rm", "--force", "--volumes", name)
        with contextlib.suppress(CommandError):
            dockerd.cli("volume", "rm", "--force", volume)


def _install_key(command: str, root: Path, oauth_key: dict[str, str]) -> Path:
    """The documented ``sudo install ... key.json /etc/gar-proxy/key.json``, run for real
    with the key made here and /etc under ``root``."""
    (root / "key.json").write_text(json.dumps(oauth_key))
    words = shlex.split(command)
    assert words[:2] == ["sudo", "install"], command
    target = root / "etc" / "gar-proxy" / "key.json"
    words = [str(target) if w == "/etc/gar-proxy/key.json" else w for w in words[1:]]
    if "-D" not in words:  # the Dockerfile's form: /etc/gar-proxy already exists
        target.parent.mkdir(parents=True)
    subprocess.run(words, cwd=root, check=True, timeout=30)
    info = target.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (IMAGE_UID, 0o600)
    return target


def _as_tested(command: str, key: Path, name: str, volume: str) -> list[str]:
    """The documented ``docker run``: port publishing becomes --network none, the key's
    path, the volume, the container's name and the image tag are filled in."""
    text = command.replace("/etc/gar-proxy/key.json", str(key))
    text = text.replace("-p 127.0.0.1:5000:5000", "--network none")
    text = re.sub(r"(?<=-v )gar-cache:", f"{volume}:", text)
    text = text.replace("--name gar-proxy ", "")
    words = shlex.split(text)
    assert words[:3] == ["docker", "run", "-d"] and words[-1] == "gar-proxy:latest", command
    return ["run", "--name", name, "--health-interval=500ms", *words[2:-1], IMAGE_TAG]


# Literal calls: test_documented_commands finds which commands tests run by them.
DOCUMENTED_RUNS = {
    "deploy/README.md": lambda: (
        documented("deploy/README.md", "sudo install"),
        documented("deploy/README.md", "docker run"),
    ),
    "Dockerfile": lambda: (
        documented("Dockerfile", "sudo install"),
        documented("Dockerfile", "docker run"),
    ),
}


@pytest.mark.parametrize("where", sorted(DOCUMENTED_RUNS))
def test_the_documented_docker_run_starts_and_turns_healthy(
    image: str, dockerd: Dockerd, oauth: FakeOAuth, tmp_path: Path, where: str
) -> None:
    """Before, both exited at once: the image listens on 0.0.0.0, refused without client
    auth or access.anonymous."""
    install, docker_run = DOCUMENTED_RUNS[where]()
    key = _install_key(install, tmp_path, oauth.service_account().info)
    name, volume = f"gpt-{uuid.uuid4().hex[:10]}", f"gpt-cache-{uuid.uuid4().hex[:10]}"
    with _cleanup(dockerd, name, volume):
        dockerd.cli(*_as_tested(docker_run, key, name, volume))
        _wait_healthy(dockerd, name)
        # Ready too, with no network at all: it can serve its cache. The upstream's
        # state is reported, not required.
        dockerd.cli("exec", name, "gar-proxy", "healthcheck", "/readyz")
        user = dockerd.cli("exec", name, "id", "-u").stdout.strip()
    assert user == str(IMAGE_UID)


def test_the_compose_service_starts_and_turns_healthy(
    image: str, dockerd: Dockerd, oauth: FakeOAuth, tmp_path: Path
) -> None:
    """``docker compose up`` (no compose on this machine: the schema is checked in
    test_documented_commands) played by the docker CLI with what the service says."""
    path = REPO / "deploy" / "compose" / "compose.yaml"
    assert documented("deploy/compose/compose.yaml", "docker compose") == (
        "docker compose -f deploy/compose/compose.yaml up -d"
    )
    key = _install_key(
        documented("deploy/compose/compose.yaml", "sudo install"), tmp_path,
        oauth.service_account().info,
    )  # fmt: skip
    service = yaml.safe_load(path.read_text())["services"]["gar-proxy"]
    name, volume = f"gpt-{uuid.uuid4().hex[:10]}", f"gpt-cache-{uuid.uuid4().hex[:10]}"
    args = ["run", "-d", "--name", name, "--network", "none"]
    args += [f"--env={k}={v}" for k, v in service["environment"].items()]
    for spec in service["volumes"]:
        source, target, *mode = spec.split(":")
        source = str(key) if source == "/etc/gar-proxy/key.json" else volume
        args += ["-v", ":".join([source, target, *mode])]
    check = service["healthcheck"]
    args += ["--health-cmd", shlex.join(check["test"][1:]), "--health-interval=500ms",
             f"--health-retries={check['retries']}", "--stop-timeout=60"]  # fmt: skip
    with _cleanup(dockerd, name, volume):
        dockerd.cli(*args, IMAGE_TAG)
        _wait_healthy(dockerd, name)


def test_with_tls_on_the_images_health_check_passes(
    image: str, dockerd: Dockerd, tmp_path: Path
) -> None:
    """Before, the HEALTHCHECK spoke plain HTTP to a TLS listener: unhealthy, and a
    Kubernetes liveness probe would have restarted the proxy."""
    ca = trustme.CA()
    cert = ca.issue_cert("gar-proxy.example")
    tls = tmp_path / "tls"
    tls.mkdir()
    cert.private_key_pem.write_to_path(str(tls / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))
    for file in (tls / "key.pem", tls / "cert.pem"):
        os.chown(file, IMAGE_UID, IMAGE_UID)
        file.chmod(0o600)
    name, volume = f"gpt-{uuid.uuid4().hex[:10]}", f"gpt-cache-{uuid.uuid4().hex[:10]}"
    with _cleanup(dockerd, name, volume):
        dockerd.cli(
            "run", "-d", "--name", name, "--network", "none", "--health-interval=500ms",
            "-v", f"{volume}:/cache", "-v", f"{tls}:/run/tls:ro",
            "-e", "GAR_PROXY_TLS_CERT_FILE=/run/tls/cert.pem",
            "-e", "GAR_PROXY_TLS_KEY_FILE=/run/tls/key.pem",
            "-e", "GAR_PROXY_ACCESS_ANONYMOUS=true", "-e", "GAR_PROXY_UPSTREAM_AUTH=none",
            IMAGE_TAG,
        )  # fmt: skip
        _wait_healthy(dockerd, name)
        plain = dockerd.client.containers.get(name).exec_run(
            [
                "python3",
                "-c",
                "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/healthz')",
            ]
        )
    assert plain.exit_code != 0  # the listener really is TLS-only
