"""Reads scoped to the repository asked for, against the fake GAR (which links blobs
per repository, as the CNCF registry does): a digest cached for one repository is
answered for another only if upstream holds it there, and a manifest deleted
upstream through the proxy stops answering 200."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer
from testkit.proxyharness import proxy_settings, run_proxy
from tests.conftest import FakeGarFactory, ProxyFactory

A, B, C = "proj/repo/a", "proj/repo/b", "proj/repo/c"


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


def code(answer: httpx.Response) -> str:
    return str(answer.json()["errors"][0]["code"])


def test_a_digest_cached_for_one_repository_is_checked_for_another(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    image = build_image([make_layer(seed=11)])
    fake.put_image("us", A, "v1", image)
    fake.put_image("us", B, "v1", image)
    layer = image.blobs[-1]
    running = proxy(fake.upstream)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get(f"/v2/{A}/manifests/{image.digest}").status_code == 200
        assert client.get(f"/v2/{A}/blobs/{layer.digest}").content == layer.data
        fake.reset_counts()
        for _ in range(3):  # cached, and upstream holds it in B: asked once, remembered
            assert client.get(f"/v2/{B}/blobs/{layer.digest}").content == layer.data
            assert client.head(f"/v2/{B}/manifests/{image.digest}").status_code == 200
        assert fake.count("HEAD") == 2 and fake.count("GET") == 0
        for _ in range(2):  # C does not hold it: 404 as upstream would answer
            blob = client.get(f"/v2/{C}/blobs/{layer.digest}")
            assert (blob.status_code, code(blob)) == (404, "BLOB_UNKNOWN")
            manifest = client.get(f"/v2/{C}/manifests/{image.digest}")
            assert (manifest.status_code, code(manifest)) == (404, "MANIFEST_UNKNOWN")
        assert fake.count("GET") == 0
        fake.reset_counts()
        assert client.get(f"/v2/{A}/blobs/{layer.digest}").content == layer.data
        assert fake.count() == 0  # the repository it was fetched for: a plain hit


def test_known_pairs_outlive_a_restart_and_offline_serves_only_those(
    fake: FakeGAR, tmp_path: Path
) -> None:
    image = build_image([make_layer(seed=12)])
    fake.put_image("us", A, "v1", image)
    fake.put_image("us", B, "v1", image)
    layer = image.blobs[-1]
    cache = tmp_path / "cache"
    with run_proxy(proxy_settings(cache, fake.upstream)) as running:
        assert httpx.get(f"{running.url}/v2/{A}/blobs/{layer.digest}").content == layer.data
    settings = proxy_settings(cache, fake.upstream, cache__offline="true")
    with run_proxy(settings) as running, httpx.Client(base_url=running.url) as client:
        assert client.get(f"/v2/{A}/blobs/{layer.digest}").content == layer.data
        assert client.get(f"/v2/{B}/blobs/{layer.digest}").status_code == 404


def test_a_manifest_deleted_through_the_proxy_stops_answering(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    image = build_image([make_layer(seed=13)])
    fake.put_image("us", A, "v1", image)
    running = proxy(fake.upstream, server__allow_delete="true")
    url = f"/v2/{A}/manifests/{image.digest}"
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get(f"/v2/{A}/manifests/v1").status_code == 200  # tag and digest cached
        assert client.get(url).status_code == 200
        assert client.delete(url).status_code == 202
        assert fake.get_manifest("us", A, image.digest) is None
        for reference in (image.digest, "v1"):
            gone = client.get(f"/v2/{A}/manifests/{reference}")
            assert (gone.status_code, code(gone)) == (404, "MANIFEST_UNKNOWN")
