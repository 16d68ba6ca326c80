"""Pull through the proxy from the real CNCF distribution registry (auth none)."""

from __future__ import annotations

from pathlib import Path

import httpx

from proxy.oci import mediatypes as mt
from testkit.images import build_image, build_index, make_layer, push_image
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.realclients import DistributionRegistry

ACCEPT = ", ".join(mt.DEFAULT_ACCEPT)


def test_manifest_and_blobs_round_trip(
    distribution_registry: DistributionRegistry, tmp_path: Path
) -> None:
    image = build_image([make_layer({"a": b"1"}), make_layer(size=3 << 20, seed=3)])
    push_image(distribution_registry.url, "proj/repo/app", "v1", image)
    with (
        run_proxy(proxy_settings(tmp_path, distribution_registry.url)) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as client,
    ):
        for _ in range(2):
            got = client.get("/v2/proj/repo/app/manifests/v1", headers={"Accept": ACCEPT})
            assert got.status_code == 200, got.text
            assert got.headers["docker-content-digest"] == image.digest
            assert got.headers["content-type"] == image.media_type
            assert got.content == image.manifest
            for blob in image.blobs:
                body = client.get(f"/v2/proj/repo/app/blobs/{blob.digest}")
                assert body.status_code == 200
                assert body.content == blob.data
                assert body.headers["docker-content-digest"] == blob.digest
        assert proxy.upstream_fetches("blob") == len(image.blobs)
        assert proxy.upstream_fetches("manifest") == 1


def test_index_by_tag_then_children_by_digest(
    distribution_registry: DistributionRegistry, tmp_path: Path
) -> None:
    amd = build_image([make_layer({"x": b"amd"})])
    arm = build_image([make_layer({"x": b"arm"})], architecture="arm64")
    index = build_index([amd, arm])
    push_image(distribution_registry.url, "proj/repo/multi", "latest", index)
    with (
        run_proxy(proxy_settings(tmp_path, distribution_registry.url)) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as client,
    ):
        head = client.head("/v2/proj/repo/multi/manifests/latest", headers={"Accept": ACCEPT})
        assert head.status_code == 200
        assert head.headers["docker-content-digest"] == index.digest
        assert int(head.headers["content-length"]) == len(index.manifest)
        child = client.get(f"/v2/proj/repo/multi/manifests/{arm.digest}")
        assert child.content == arm.manifest
