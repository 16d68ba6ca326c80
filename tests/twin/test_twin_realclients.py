"""Real clients through the proxy against the GAR twin at its least convenient.

skopeo and the docker engine push and pull through the proxy while the twin answers in
every way the record leaves open at once (docs/GAR.md U1-U10, D1-D5, A1): absolute or
query-string session URLs that need ``Authorization`` and move on each PATCH, 204s
without ``Docker-Content-Digest``, downloads on another host after a 307, HEADs without
a length, Range ignored, gzip'd and chunked bodies. Each pulls back the digest it
pushed, and every blob reached the twin in one write.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from testkit.fakes.gar_twin import GarTwin
from testkit.images import build_image, make_layer, write_oci_layout
from testkit.realclients import CommandError, Dockerd, Skopeo
from tests.twin.conftest import ThroughFactory, TwinFactory

AWKWARD: dict[str, dict[str, Any]] = {
    "as-recorded": {},
    "everything-open-at-once": {
        "upload_location": "query", "session_auth": True, "patch_status": 204,
        "patch_location": "new", "patch_range": "none", "put_status": 204,
        "put_digest": False, "manifest_digest": False, "download_status": 307,
        "download_location": "storage", "head_length": False, "ranges": False,
        "gzip": True, "manifest_type_params": True, "manifest_head_length": False,
        "challenge_service": True, "challenge_scope": True, "token_field": "access_token",
    },
    "absolute-and-chunked": {
        "upload_location": "absolute", "download_location": "absolute",
        "download_chunked": True, "manifest_chunked": True, "head_redirects": True,
    },
}  # fmt: skip


def host(url: str) -> str:
    return url.removeprefix("http://")


@pytest.mark.parametrize("variant", AWKWARD)
def test_skopeo_pushes_and_pulls_back_the_same_digest(
    variant: str, twin: TwinFactory, through: ThroughFactory, skopeo_runner: Skopeo,
    tmp_path: Path,
) -> None:  # fmt: skip
    served: GarTwin = twin(**AWKWARD[variant])
    running = through(served)
    image = build_image([make_layer(size=300_000, seed=31), make_layer(seed=32)])
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    target = f"docker://{host(running.url)}/proj/repo/skopeo:v1"
    skopeo_runner("copy", "--quiet", f"oci:{layout}:v1", target)
    assert served.store.tags[("proj/repo/skopeo", "v1")] == image.digest
    assert served.writes and all(n == 1 for n in served.writes), served.writes
    skopeo_runner("copy", "--quiet", target, f"oci:{tmp_path / 'out'}:v1")
    assert skopeo_runner.inspect(target)["Digest"] == image.digest


def rootfs(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/twin", b"pushed to the twin\n"), ("bin/y", b"y" * 70_000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("variant", AWKWARD)
def test_docker_pushes_and_pulls_back_the_same_digest(
    variant: str, twin: TwinFactory, through: ThroughFactory, dockerd: Dockerd, tmp_path: Path
) -> None:
    served: GarTwin = twin(**AWKWARD[variant])
    running = through(served)
    ref = f"{host(running.url)}/proj/repo/docker-{variant}:v1"
    dockerd.cli("import", str(rootfs(tmp_path)), ref)
    try:
        digest = dockerd.push(ref)
        assert served.store.tags[(f"proj/repo/docker-{variant}", "v1")] == digest
        assert served.writes and all(n == 1 for n in served.writes), served.writes
        dockerd.cli("rmi", ref)
        dockerd.cli("pull", ref)
        assert f"{ref.rsplit(':', 1)[0]}@{digest}" in dockerd.repo_digests(ref)
    finally:
        with contextlib.suppress(CommandError):
            dockerd.cli("rmi", ref)
