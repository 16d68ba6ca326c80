"""Real docker, podman and skopeo through the TLS listener with client auth.

The proxy listens with a certificate from a test CA (``trustme``) and takes an
htpasswd user (alice: pulls ``proj``, pushes ``proj/repo/team-a``) and a token (ci:
pulls ``proj/repo``, pushes nothing); upstream is the CNCF distribution registry.
Each client logs in, pulls, pushes, and meets ``DENIED`` where the rules say so.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme

from proxy.oci import mediatypes as mt
from testkit.images import build_image, make_layer, push_image, write_oci_layout
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.realclients import CommandError, DistributionRegistry, Dockerd, Podman, Skopeo

RULES = """
[identities.alice]
pull = ["proj"]
push = ["proj/repo/team-a"]

[identities.ci]
pull = ["proj/repo"]
"""
ALICE = ("alice", "alice-pw")
CI = ("ci", "ci-token-1")


@dataclass
class Secured:
    proxy: RunningProxy
    host: str  # 127.0.0.1:PORT
    cert_dir: Path  # holds ca.crt, as --cert-dir wants


@contextlib.contextmanager
def secured_proxy(tmp_path: Path, upstream: str) -> Iterator[Secured]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
    hashed = bcrypt.hashpw(ALICE[1].encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"alice:{hashed}\n")
    (tmp_path / "tokens").write_text(f"ci:{CI[1]}\n")
    (tmp_path / "rules.toml").write_text(RULES)
    settings = proxy_settings(
        tmp_path,
        upstream,
        tls__cert_file=str(tmp_path / "cert.pem"),
        tls__key_file=str(tmp_path / "key.pem"),
        access__htpasswd_file=str(tmp_path / "htpasswd"),
        access__tokens_file=str(tmp_path / "tokens"),
        access__rules_file=str(tmp_path / "rules.toml"),
    )
    with run_proxy(settings) as proxy:
        yield Secured(proxy, proxy.url.removeprefix("https://"), cert_dir)


def _upstream_digest(registry: DistributionRegistry, repo: str, tag: str) -> str:
    accept = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
    answer = httpx.get(f"{registry.url}/v2/{repo}/manifests/{tag}", headers=accept)
    assert answer.status_code == 200, answer.text
    return answer.headers["docker-content-digest"]


def _refused(run: object, *args: str) -> str:
    with pytest.raises(CommandError) as refused:
        run(*args)  # type: ignore[operator]
    return f"{refused.value.stderr}{refused.value.output}".lower()


@contextlib.contextmanager
def docker_trusts(host: str, ca: Path) -> Iterator[None]:
    """dockerd reads /etc/docker/certs.d/HOST:PORT/ca.crt per registry; the port is
    ours alone, so the directory is too."""
    directory = Path("/etc/docker/certs.d") / host
    directory.mkdir(parents=True)
    try:
        shutil.copy(ca, directory / "ca.crt")
        yield
    finally:
        shutil.rmtree(directory)


def test_docker_logs_in_pulls_pushes_and_is_denied(
    distribution_registry: DistributionRegistry, dockerd: Dockerd, tmp_path: Path
) -> None:
    image = build_image([make_layer({"tls": b"docker\n"}), make_layer(seed=41)], fmt="docker")
    push_image(distribution_registry.url, "proj/repo/base", "v1", image)
    with (
        secured_proxy(tmp_path, distribution_registry.url) as secured,
        docker_trusts(secured.host, secured.cert_dir / "ca.crt"),
    ):
        host = secured.host
        dockerd.remove_all_images()
        login = dockerd.cli("login", "-u", ALICE[0], "-p", ALICE[1], host)
        assert "Login Succeeded" in login.stdout
        dockerd.cli("pull", "--quiet", f"{host}/proj/repo/base:v1")
        target = f"{host}/proj/repo/team-a/web:v1"
        dockerd.cli("tag", f"{host}/proj/repo/base:v1", target)
        pushed = dockerd.push(target)
        assert _upstream_digest(distribution_registry, "proj/repo/team-a/web", "v1") == pushed
        assert "denied" in _refused(dockerd.cli, "pull", f"{host}/other/repo/img:v1")
        # ci (a token, given as the password) may pull proj/repo but push nothing.
        dockerd.cli("login", "-u", CI[0], "-p", CI[1], host)
        ci_target = f"{host}/proj/repo/team-a/ci:v1"
        dockerd.cli("tag", target, ci_target)
        assert "denied" in _refused(dockerd.cli, "push", ci_target)
        dockerd.remove_all_images()
        dockerd.cli("pull", "--quiet", target)
        dockerd.cli("logout", host)


def test_skopeo_with_creds_and_cert_dir(
    distribution_registry: DistributionRegistry, skopeo_runner: Skopeo, tmp_path: Path
) -> None:
    image = build_image([make_layer({"tls": b"skopeo\n"})])
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    with secured_proxy(tmp_path, distribution_registry.url) as secured:
        dest = f"docker://{secured.host}/proj/repo/team-a/skopeo:v1"
        tls = [f"--dest-cert-dir={secured.cert_dir}", "--dest-tls-verify=true"]
        ci_copy = [
            "copy",
            "--quiet",
            *tls,
            f"--dest-creds={':'.join(CI)}",
            f"oci:{layout}:v1",
            dest,
        ]
        assert "denied" in _refused(skopeo_runner, *ci_copy)
        skopeo_runner(
            "copy", "--quiet", *tls, f"--dest-creds={':'.join(ALICE)}", f"oci:{layout}:v1", dest
        )
        read = [f"--cert-dir={secured.cert_dir}", "--tls-verify=true", f"--creds={':'.join(CI)}"]
        assert skopeo_runner.inspect(dest, *read)["Digest"] == image.digest
        # The flags after the runner's own --tls-verify=false win: without the CA, no trust.
        untrusted = _refused(skopeo_runner.inspect, dest, "--tls-verify=true", read[2])
        assert "certificate" in untrusted
        other = f"docker://{secured.host}/proj/other/img:v1"
        assert "denied" in _refused(skopeo_runner.inspect, other, *read)
    assert _upstream_digest(distribution_registry, "proj/repo/team-a/skopeo", "v1") == image.digest


def test_podman_logs_in_pulls_and_is_denied_a_push(
    distribution_registry: DistributionRegistry, podman_runner: Podman, tmp_path: Path
) -> None:
    image = build_image([make_layer({"tls": b"podman\n"}, seed=43)])
    push_image(distribution_registry.url, "proj/repo/team-a/pod", "v1", image)
    with secured_proxy(tmp_path, distribution_registry.url) as secured:
        host, tls = secured.host, [f"--cert-dir={secured.cert_dir}", "--tls-verify=true"]
        anonymous = _refused(podman_runner, "pull", *tls, f"{host}/proj/repo/team-a/pod:v1")
        assert "unauthorized" in anonymous or "authentication required" in anonymous
        podman_runner("login", *tls, "-u", CI[0], "-p", CI[1], host)
        podman_runner("pull", "--quiet", *tls, f"{host}/proj/repo/team-a/pod:v1")
        target = f"{host}/proj/repo/team-a/pod2:v1"
        podman_runner("tag", f"{host}/proj/repo/team-a/pod:v1", target)
        assert "denied" in _refused(podman_runner, "push", "--quiet", *tls, target)
        podman_runner("login", *tls, "-u", ALICE[0], "-p", ALICE[1], host)
        podman_runner("push", "--quiet", *tls, target)
    assert _upstream_digest(distribution_registry, "proj/repo/team-a/pod2", "v1") == image.digest
