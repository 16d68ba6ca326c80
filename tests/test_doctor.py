"""``gar-proxy doctor`` against the real runtimes the suite starts: for dockerd,
containerd (its CRI plugin, the kubelet's path), podman and the kubelet's endpoint, a
configured case that it finds good and confirms with a real pull through the proxy,
and a misconfigured one that it names with what to change.

Each runtime is checked alone (the others pointed at paths that do not exist), through
the CLI as a user runs it, with ``--config`` naming the running proxy. Nothing leaves
127.0.0.1: the good cases' hosts.toml names the proxy as its server too, and a runtime
the doctor finds misconfigured is not asked to pull (it would go to the registry).

containerd here is Debian 12's 1.6: its recipe (deploy/containerd/config-1.x.toml) is
run for real; the 2.0 and 2.1 recipes are checked as configuration (the doctor's rules,
against the shipped files) since no 2.x daemon is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.doctor import containerd as containerd_rules
from testkit.containerd import Containerd
from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.proxyprocess import proxy_env
from testkit.realclients import Dockerd, Podman
from tests.conftest import require_binaries
from tests.test_realclients_pull import MACHINE_ARCH

REPO = Path(__file__).resolve().parent.parent
GAR_IMAGE = "us-docker.pkg.dev/proj/repo/app:1"
HUB_REPO = "proj/dockerhub-remote/library/alpine"
NOWHERE = "/nonexistent/doctor"
MIRRORS = [{"host": "docker.io", "repository": "proj/dockerhub-remote", "location": "us",
            "listen": "127.0.0.1:0"}]  # fmt: skip


@dataclass
class Rig:
    fake: FakeGAR
    proxy: RunningProxy
    config: Path  # the doctor's --config: the running proxy's address and mirrors
    image: Image
    hub_image: Image  # Docker Hub's alpine:3, through the mirror repository

    def doctor(self, *args: str) -> tuple[int, list[dict[str, object]]]:
        """``gar-proxy doctor --json`` with every runtime elsewhere unless ``args`` say."""
        defaults = {
            "--docker-config": NOWHERE, "--docker": f"docker --host unix://{NOWHERE}",
            "--containerd-config": NOWHERE, "--containerd-address": NOWHERE,
            "--podman-registries": NOWHERE, "--kubelet-config": NOWHERE,
            "--kubelet-flags": NOWHERE,
        }  # fmt: skip
        given = dict(zip(args[::2], args[1::2], strict=True))
        words = [w for key, value in {**defaults, **given}.items() for w in (key, value)]
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "--config", str(self.config), "doctor", "--json",
             *words],
            capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
            env=proxy_env(self.config.parent / "cache"),
        )  # fmt: skip
        assert result.stderr == "" or result.returncode in (0, 1), result.stderr
        return result.returncode, json.loads(result.stdout)


def _one(found: list[dict[str, object]], runtime: str) -> dict[str, object]:
    (match,) = [f for f in found if str(f["runtime"]).startswith(runtime)]
    others = [f for f in found if f is not match]
    assert not any(f["present"] for f in others), others
    return match


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("doctor")
    fake = FakeGAR(auth="none")
    layers = [make_layer({"doctor/a": b"a"}), make_layer({"doctor/b": b"b" * 2048})]
    image = build_image(layers, fmt="docker", architecture=MACHINE_ARCH)
    fake.put_image("us", "proj/repo/app", "1", image)
    hub_layers = [make_layer({"doctor/hub": b"alpine"})]
    hub_image = build_image(hub_layers, fmt="docker", architecture=MACHINE_ARCH)
    fake.put_image("us", HUB_REPO, "3", hub_image)
    with fake.serve():
        settings = proxy_settings(work, fake.upstream, routing__mirrors=MIRRORS)
        with run_proxy(settings) as running:
            hub = running.mirror_url("docker.io").removeprefix("http://")
            config = work / "gar-proxy.toml"
            config.write_text(
                f'[server]\nlisten = "{running.url.removeprefix("http://")}"\n'
                f'[upstream]\nurl = "{fake.upstream}"\nauth = "none"\n'
                f'[[mirrors]]\nhost = "docker.io"\nrepository = "proj/dockerhub-remote"\n'
                f'location = "us"\nlisten = "{hub}"\n'
            )
            yield Rig(fake, running, config, image, hub_image)


# ---------------------------------------------------------------- containerd


def _recipe(name: str, certs: Path) -> str:
    """A deploy/containerd recipe's registry tables, its config_path filled in."""
    text = (REPO / "deploy" / "containerd" / name).read_text()
    body = "\n".join(line for line in text.splitlines()
                     if not line.startswith(("#", "version")))  # fmt: skip
    return body.replace("/etc/containerd/certs.d", str(certs)) + "\n"


def _hosts_toml(certs: Path, host: str, proxy_url: str) -> None:
    """deploy/containerd/hosts.toml for ``host``, the proxy as mirror and as server (so
    a failed mirror never falls back to the internet)."""
    text = (REPO / "deploy" / "containerd" / "hosts.toml").read_text()
    text = text.replace("http://127.0.0.1:5000", proxy_url)
    text = text.replace('server = "https://us-docker.pkg.dev"', f'server = "{proxy_url}"')
    (certs / host).mkdir(parents=True, exist_ok=True)
    (certs / host / "hosts.toml").write_text(text)


@pytest.fixture(scope="module")
def containerd(rig: Rig) -> Iterator[Containerd]:
    require_binaries("containerd")
    daemon = Containerd()
    daemon.config.write_text(daemon.config.read_text() + _recipe("config-1.x.toml", daemon.certs))
    _hosts_toml(daemon.certs, "us-docker.pkg.dev", rig.proxy.url)
    # Docker Hub names through the proxy too, as deploy/mirrors/certs.d/ says.
    hub = (REPO / "deploy" / "mirrors" / "certs.d" / "docker.io" / "hosts.toml").read_text()
    hub = hub.replace("http://127.0.0.1:5000", rig.proxy.url)
    hub = hub.replace('server = "https://registry-1.docker.io"', f'server = "{rig.proxy.url}"')
    (daemon.certs / "docker.io").mkdir()
    (daemon.certs / "docker.io" / "hosts.toml").write_text(hub)
    with daemon:
        yield daemon


def test_doctor_finds_containerd_1x_configured_and_pulls_through_the_proxy(
    rig: Rig, containerd: Containerd
) -> None:
    rig.fake.reset_counts()
    code, found = rig.doctor(
        "--containerd-config",
        str(containerd.config),
        "--containerd-address",
        containerd.socket,
        "--pull",
        GAR_IMAGE,
    )
    finding = _one(found, "containerd")
    assert code == 0, json.dumps(finding, indent=1)
    assert str(finding["runtime"]).startswith("containerd 1.")
    assert finding["ok"] and finding["fixes"] == []
    assert str(finding["pull"]).startswith("pulled through the proxy"), finding
    assert rig.fake.count("GET", "blob", path="proj/repo/app") == len(rig.image.blobs)


def test_doctor_names_what_a_misconfigured_containerd_lacks(
    rig: Rig, containerd: Containerd, tmp_path: Path
) -> None:
    # The classic slip on a 1.x node: the 2.x section, which 1.x ignores.
    wrong = tmp_path / "config.toml"
    wrong.write_text(_recipe("config-2.1.toml", tmp_path / "certs.d"))
    code, found = rig.doctor(
        "--containerd-config",
        str(wrong),
        "--containerd-address",
        containerd.socket,
        "--pull",
        GAR_IMAGE,
    )
    finding = _one(found, "containerd")
    assert code == 1 and not finding["ok"]
    fixes = "\n".join(map(str, finding["fixes"]))  # type: ignore[call-overload]
    assert "containerd 1.x ignores" in fixes and "config-1.x.toml" in fixes
    assert f"{tmp_path / 'certs.d'}" not in fixes  # 1.x reads no certs dir: it says so
    assert "us-docker.pkg.dev/hosts.toml" in fixes
    assert str(finding["pull"]).startswith("not pulled")


@pytest.mark.parametrize(
    ("recipe", "version", "problem"),
    [
        ("config-2.1.toml", (2, 1), None),
        ("config-2.1.toml", (2, 2), None),
        ("config-2.0.toml", (2, 0), None),
        ("config-2.0.toml", (2, 1), "use_local_image_pull = true"),
        ("config-1.x.toml", (1, 7), None),
        ("config-1.x.toml", (2, 1), "use_local_image_pull = true"),  # migrated, but 2.1+
        ("config-2.1.toml", (1, 7), "containerd 1.x ignores"),
        (None, (2, 2), "give one directory"),  # 2.x's default config_path is two
        (None, (1, 6), "no config_path"),
    ],
)
def test_the_shipped_containerd_recipes_suit_their_versions(
    recipe: str | None, version: tuple[int, int], problem: str | None
) -> None:
    text = (REPO / "deploy" / "containerd" / recipe).read_text() if recipe else ""
    path, problems = containerd_rules.config_problems(tomllib.loads(text), version)
    if problem is None:
        assert problems == [] and path == "/etc/containerd/certs.d"
    else:
        assert any(problem in p for p in problems), problems


# ---------------------------------------------------------------- dockerd


def test_doctor_finds_dockerd_mirrored_and_pulls_docker_hub_names_through_the_proxy(
    rig: Rig,
) -> None:
    require_binaries("dockerd", "docker")
    hub = rig.proxy.mirror_url("docker.io")
    config = {"registry-mirrors": [hub], "insecure-registries": [hub.removeprefix("http://")]}
    rig.fake.reset_counts()
    with Dockerd(config=config) as daemon:
        code, found = rig.doctor(
            "--docker-config",
            str(daemon.base / "daemon.json"),
            "--docker",
            f"docker --host {daemon.host}",
            "--pull",
            "alpine:3",
        )
    finding = _one(found, "dockerd")
    assert code == 0 and finding["ok"], finding
    assert str(finding["pull"]).startswith("pulled through the proxy"), finding
    assert rig.fake.count("GET", "blob", path=HUB_REPO) == len(rig.hub_image.blobs)


def test_doctor_says_dockerd_needs_the_mirror_or_a_restart(
    rig: Rig, dockerd: Dockerd, tmp_path: Path
) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"registry-mirrors": ["https://mirror.gcr.io"]}))
    code, found = rig.doctor(
        "--docker-config", str(daemon_json), "--docker", f"docker --host {dockerd.host}"
    )
    finding = _one(found, "dockerd")
    hub = rig.proxy.mirror_url("docker.io")
    assert code == 1 and f'"registry-mirrors": ["{hub}"]' in str(finding["fixes"])
    # The file is right, but the running daemon (started without it) does not use it.
    daemon_json.write_text(json.dumps({"registry-mirrors": [hub]}))
    code, found = rig.doctor(
        "--docker-config",
        str(daemon_json),
        "--docker",
        f"docker --host {dockerd.host}",
        "--pull",
        "alpine:3",
    )
    finding = _one(found, "dockerd")
    assert code == 1 and "restart dockerd" in str(finding["fixes"])
    assert str(finding["pull"]).startswith("not pulled")


# ---------------------------------------------------------------- podman


def _registries_conf(path: Path, mirror: str, insecure: bool = True) -> Path:
    path.write_text(
        'unqualified-search-registries = []\n[[registry]]\nlocation = "us-docker.pkg.dev"\n'
        f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = {str(insecure).lower()}\n'
        # Docker Hub names through the mirror's own socket, bare as dockerd sends them.
        '[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\n'
        f'location = "{mirror.split("/")[0]}/docker.io"\ninsecure = true\n'
    )
    return path


def test_doctor_finds_podman_mirrored_and_pulls_through_the_proxy(
    rig: Rig, podman_runner: Podman
) -> None:
    address = rig.proxy.url.removeprefix("http://")
    conf = _registries_conf(
        podman_runner.workdir / "registries.conf", f"{address}/us-docker.pkg.dev"
    )
    podman = " ".join(["podman", *podman_runner.global_flags()])
    rig.fake.reset_counts()
    code, found = rig.doctor(
        "--podman-registries", str(conf), "--podman", podman, "--pull", GAR_IMAGE
    )
    finding = _one(found, "podman")
    assert code == 0 and finding["ok"], finding
    assert str(finding["pull"]).startswith("pulled through the proxy"), finding
    assert podman_runner.image_digest(GAR_IMAGE) == rig.image.digest


def test_doctor_names_what_a_misconfigured_podman_lacks(rig: Rig, tmp_path: Path) -> None:
    address = rig.proxy.url.removeprefix("http://")
    # The mirror without the registry's host in its path, and without insecure.
    conf = _registries_conf(tmp_path / "registries.conf", address, insecure=False)
    code, found = rig.doctor("--podman-registries", str(conf))
    finding = _one(found, "podman")
    assert code == 1 and not finding["ok"]
    assert f'location = "{address}/us-docker.pkg.dev" insecure = true' in str(finding["fixes"])


# ---------------------------------------------------------------- kubelet


def test_doctor_follows_the_kubelets_image_service_to_containerd(
    rig: Rig, containerd: Containerd, tmp_path: Path
) -> None:
    kubelet = tmp_path / "config.yaml"
    kubelet.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        f"containerRuntimeEndpoint: unix://{containerd.socket}\n"
    )
    args = ["--kubelet-config", str(kubelet), "--containerd-address", containerd.socket]
    code, found = rig.doctor(*args, "--containerd-config", str(containerd.config))
    (finding,) = [f for f in found if f["runtime"] == "kubelet"]
    assert code == 0 and finding["ok"], found
    assert f"unix://{containerd.socket}" in str(finding["notes"])
    # The same kubelet over a containerd whose config does not route the pulls.
    wrong = tmp_path / "containerd.toml"
    wrong.write_text("version = 2\n")
    code, found = rig.doctor(*args, "--containerd-config", str(wrong))
    (finding,) = [f for f in found if f["runtime"] == "kubelet"]
    assert code == 1 and not finding["ok"] and "fix containerd" in str(finding["fixes"])
