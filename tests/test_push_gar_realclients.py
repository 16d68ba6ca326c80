"""Real clients push through the proxy to the GAR-shaped fake and pull the same digests back.

The fake takes uploads as GAR does (sessions at ``/artifacts-uploads/...`` that take one
write, blob GETs sent on to signed downloads; docs/GAR.md), with Google credentials the
proxy trades at the token endpoint. Each client uploads its own way: docker and podman
a streamed PATCH and an empty PUT, skopeo likewise, containerd (``ctr``) and oras a PUT
with the body, oras also in chunks with ``Content-Range``. Whatever the way, each blob
reaches the fake in ONE write (``fake.writes(digest)``), and what the client pulls back
through the proxy carries the digest it pushed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer, write_oci_layout
from testkit.proxyharness import RunningProxy
from testkit.realclients import CommandError, Dockerd, Podman, Skopeo, run
from tests.conftest import FakeGarFactory, ProxyFactory, require_binaries
from tests.test_realclients_pull import MACHINE_ARCH, _containerd_socket

TOKEN = "ya29.realclient-push"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    fake = fake_gar(access_tokens={TOKEN})
    fake.add_repository("us", "proj", "repo")
    return fake


@pytest.fixture
def running(fake: FakeGAR, proxy: ProxyFactory) -> RunningProxy:
    return proxy(
        fake.upstream, upstream__auth="basic", upstream__username="oauth2accesstoken",
        upstream__password=TOKEN,
    )  # fmt: skip


def host(running: RunningProxy) -> str:
    return running.url.removeprefix("http://")


def upstream_digest(fake: FakeGAR, repo: str, tag: str) -> str:
    found = fake.get_manifest("us", repo, tag)
    assert found is not None, f"{repo}:{tag} did not reach the fake"
    return "sha256:" + hashlib.sha256(found[0]).hexdigest()


def blobs_of(fake: FakeGAR, repo: str, tag: str) -> list[str]:
    """The config and layers of the manifest ``repo:tag`` at the fake."""
    found = fake.get_manifest("us", repo, tag)
    assert found is not None
    doc = json.loads(found[0])
    return [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]


def assert_one_write_each(fake: FakeGAR, digests: list[str]) -> None:
    for digest in digests:
        assert fake.writes(digest) == 1, (digest, fake.upload_writes)


def rootfs_tar(tmp_path: Path, name: str) -> Path:
    """A small root filesystem tarball (``docker import``/``podman import`` make an
    image of it that no registry has seen: every blob must be uploaded)."""
    path = tmp_path / f"{name}.tar"
    with tarfile.open(path, "w") as tar:
        for file, data in ((f"etc/{name}", f"pushed by {name}\n".encode()), ("bin/x", b"x" * 9000)):
            info = tarfile.TarInfo(file)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_docker_push_lands_one_write_per_blob_and_pulls_back(
    fake: FakeGAR, running: RunningProxy, dockerd: Dockerd, tmp_path: Path
) -> None:
    ref = f"{host(running)}/proj/repo/docker-push:v1"
    dockerd.cli("import", str(rootfs_tar(tmp_path, "docker")), ref)
    try:
        digest = dockerd.push(ref)
        assert upstream_digest(fake, "proj/repo/docker-push", "v1") == digest
        assert_one_write_each(fake, blobs_of(fake, "proj/repo/docker-push", "v1"))
        assert fake.count("PATCH", "upload") >= 2  # docker's way: a streamed PATCH each
        dockerd.cli("rmi", ref)
        dockerd.cli("pull", ref)
        assert f"{ref.rsplit(':', 1)[0]}@{digest}" in dockerd.repo_digests(ref)
    finally:
        with contextlib.suppress(CommandError):
            dockerd.cli("rmi", ref)


def test_podman_push_lands_one_write_per_blob_and_pulls_back(
    fake: FakeGAR, running: RunningProxy, podman_runner: Podman, tmp_path: Path
) -> None:
    ref = f"{host(running)}/proj/repo/podman-push:v1"
    podman_runner("import", str(rootfs_tar(tmp_path, "podman")), ref)
    digest_file = tmp_path / "digest"
    podman_runner("push", "--digestfile", str(digest_file), ref)
    digest = digest_file.read_text().strip()
    assert upstream_digest(fake, "proj/repo/podman-push", "v1") == digest
    assert_one_write_each(fake, blobs_of(fake, "proj/repo/podman-push", "v1"))
    podman_runner("rmi", ref)
    podman_runner("pull", ref)
    assert podman_runner.image_digest(ref) == digest


def test_skopeo_copy_lands_one_write_per_blob_and_reads_back(
    fake: FakeGAR, running: RunningProxy, skopeo_runner: Skopeo, tmp_path: Path
) -> None:
    image = build_image([make_layer(size=200_000, seed=61), make_layer(seed=62)])
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    target = f"docker://{host(running)}/proj/repo/skopeo-push:v1"
    skopeo_runner("copy", "--quiet", f"oci:{layout}:v1", target)
    assert upstream_digest(fake, "proj/repo/skopeo-push", "v1") == image.digest
    assert_one_write_each(fake, [b.digest for b in image.blobs])
    skopeo_runner("copy", "--quiet", target, f"oci:{tmp_path / 'out'}:v1")
    assert skopeo_runner.inspect(target)["Digest"] == image.digest
    for item in image.blobs:  # pulled back through the proxy: the same bytes
        assert (tmp_path / "out" / "blobs" / "sha256" / item.digest[7:]).read_bytes() == item.data


def _oci_archive(tmp_path: Path, image_layout: Path) -> Path:
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(image_layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(image_layout)), recursive=False)
    return archive


def test_containerd_push_lands_one_write_per_blob_and_fetches_back(
    fake: FakeGAR, running: RunningProxy, dockerd: Dockerd, tmp_path: Path
) -> None:
    require_binaries("ctr")
    image = build_image([make_layer(size=150_000, seed=63)], architecture=MACHINE_ARCH)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    name = f"{host(running)}/proj/repo/ctr-push"
    ctr = [shutil.which("ctr") or "ctr", "--address", _containerd_socket(dockerd)]
    pushing, fetching = f"garproxy-push-{os.getpid()}", f"garproxy-fetch-{os.getpid()}"
    try:
        importing = [*ctr, "--namespace", pushing, "images", "import", "--base-name", name]
        run([*importing, "--all-platforms", str(_oci_archive(tmp_path, layout))])
        run([*ctr, "--namespace", pushing, "images", "push", "--plain-http", f"{name}:v1"])
        assert upstream_digest(fake, "proj/repo/ctr-push", "v1") == image.digest
        assert_one_write_each(fake, [b.digest for b in image.blobs])
        assert fake.count("PATCH", "upload") == 0  # containerd's way: the body in the PUT
        run([*ctr, "--namespace", fetching, "content", "fetch", "--plain-http", f"{name}:v1"])
        listed = run([*ctr, "--namespace", fetching, "images", "list"]).stdout
        assert f"{name}:v1" in listed and image.digest in listed, listed
    finally:
        for namespace in (pushing, fetching):
            with contextlib.suppress(CommandError):
                scoped = [*ctr, "--namespace", namespace]
                run([*scoped, "images", "rm", f"{name}:v1"], timeout=30)
                content = run([*scoped, "content", "list", "--quiet"], timeout=30).stdout.split()
                if content:
                    run([*scoped, "content", "rm", *content], timeout=30)
                run([*scoped, "namespaces", "rm", namespace], timeout=30)


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_oras_push_lands_one_write_per_blob_and_pulls_back(
    fake: FakeGAR, running: RunningProxy, tmp_path: Path, chunked: bool
) -> None:
    import oras.client as oras_client  # a dev dependency (pyproject.toml)

    artifact = tmp_path / "artifact.txt"
    artifact.write_bytes(os.urandom(300_000))
    target = f"{host(running)}/proj/repo/oras-push:v1"
    client = oras_client.OrasClient(hostname=host(running), insecure=True)
    with contextlib.chdir(tmp_path):
        client.push(target=target, files=[artifact.name], do_chunked=chunked, chunk_size=64 * 1024)
    layers = blobs_of(fake, "proj/repo/oras-push", "v1")
    assert_one_write_each(fake, layers)
    if chunked:  # oras sent the layer in PATCHes with Content-Range; GAR got one write
        assert fake.count("PATCH", "upload") == 0
    pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert [Path(p).read_bytes() for p in pulled] == [artifact.read_bytes()]
    with httpx.Client(base_url=running.url) as http:
        manifest = http.get("/v2/proj/repo/oras-push/manifests/v1", headers=ACCEPT)
    assert manifest.headers["docker-content-digest"] == upstream_digest(
        fake, "proj/repo/oras-push", "v1"
    )


@pytest.fixture(autouse=True)
def _no_leftover_sessions(running: RunningProxy) -> Iterator[None]:
    yield
    # Every upload a client finished is gone from the proxy: no spool left behind.
    assert list((running.settings.cache.dir / "uploads").iterdir()) == []
