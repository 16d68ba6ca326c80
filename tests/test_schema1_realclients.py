"""skopeo pushes a signed schema-1 manifest through the proxy to the evidence-shaped fake
and pulls it back (docs/GAR.md N1, N2): containers/image signs schema 1 itself, so this
is a real client's schema 1, not ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.oci import mediatypes as mt
from testkit.images import build_image, make_layer, write_oci_layout
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.realclients import Skopeo
from tests.conftest import FakeGarFactory

REPO = "proj/repo/old"


@pytest.mark.parametrize("rule", ["canonical", "raw"])
def test_skopeo_pushes_and_pulls_back_a_signed_schema1_image(
    rule: str, fake_gar: FakeGarFactory, skopeo_runner: Skopeo, tmp_path: Path
) -> None:
    fake = fake_gar(auth="none", schema1_digest=rule)
    fake.add_repository("us", "proj", "repo")
    image = build_image([make_layer({"etc/motd": b"schema one\n"}), make_layer(seed=31)])
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    with run_proxy(proxy_settings(tmp_path / "proxy", fake.upstream)) as proxy:
        target = f"docker://{proxy.url.removeprefix('http://')}/{REPO}:v1"
        skopeo_runner("copy", "--quiet", "--format", "v2s1", f"oci:{layout}:v1", target)
        stored, media_type = fake.get_manifest("us", REPO, "v1") or (b"", "")
        raw = skopeo_runner("inspect", "--raw", target).stdout.encode()
        out = tmp_path / "out"
        skopeo_runner("copy", "--quiet", target, f"dir:{out}")
    assert media_type == mt.DOCKER_MANIFEST_V1_SIGNED
    assert json.loads(stored)["signatures"]  # skopeo signed it
    assert raw == stored  # the proxy served GAR's bytes as they are
    pulled = {p.name for p in out.iterdir()}
    assert {layer.digest.split(":")[1] for layer in image.layers} <= pulled
