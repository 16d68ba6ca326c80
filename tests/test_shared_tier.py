"""The shared blob tier on Cloud Storage (``cache.shared``), against fake-gcs-server.

Proxy A pulls from the fake GAR and writes the blobs to the bucket; proxy B, with an
empty disk and the same bucket, pulls the same image without one blob GET to GAR. A
bad copy in the bucket is never served (B answers from GAR and writes a good copy
over it); a bucket that is down only means GAR serves (docs/DESIGN.md "Shared tier").
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import ConfigError, describe, load_settings
from proxy.config.values import SharedBucket
from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gcs import FakeGCS
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.servers import serve_in_thread
from tests.conftest import FakeGarFactory

REPO = "proj/repo/app"
PREFIX = "replicas/blobs"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
_buckets = itertools.count()


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


@pytest.fixture
def bucket(fake_gcs: FakeGCS) -> str:
    name = f"shared-{next(_buckets)}"
    fake_gcs.create_bucket(name)
    return name


def _image(seed: int) -> Image:
    return build_image([make_layer(size=300_000, seed=seed), make_layer({"f": b"x"}, seed=seed)])


@contextlib.contextmanager
def replica(root: Path, fake: FakeGAR, api: str, bucket: str) -> Iterator[RunningProxy]:
    settings = proxy_settings(
        root, fake.upstream, cache__shared=f"gs://{bucket}/{PREFIX}", apis__cloud_storage=api
    )
    with run_proxy(settings) as running:
        yield running


def pull(running: RunningProxy, image: Image, tag: str = "1.0") -> None:
    with httpx.Client(base_url=running.url, timeout=30) as http:
        got = http.get(f"/v2/{REPO}/manifests/{tag}", headers=ACCEPT)
        assert got.status_code == 200, got.text
        for blob in image.blobs:
            body = http.get(f"/v2/{REPO}/blobs/{blob.digest}")
            assert body.status_code == 200, body.text
            assert body.content == blob.data


def tier(running: RunningProxy, event: str) -> float:
    return running.services.metrics.sample("garproxy_shared_tier_total", {"event": event})


def settle(running: RunningProxy) -> None:
    """Until the background writes to the bucket scheduled so far are done."""
    shared = running.services.shared
    assert shared is not None
    running.call(shared.drain(20))


def object_name(digest: str) -> str:
    return f"{PREFIX}/sha256/{digest.removeprefix('sha256:')}"


def test_a_replica_warms_from_the_bucket_another_filled(
    tmp_path: Path, fake: FakeGAR, fake_gcs: FakeGCS, bucket: str
) -> None:
    image = _image(1)
    fake.put_image("us", REPO, "1.0", image)
    with replica(tmp_path / "a", fake, fake_gcs.url, bucket) as a:
        pull(a, image)
        settle(a)
        assert tier(a, "miss") == len(image.blobs) and tier(a, "uploaded") == len(image.blobs)
    assert fake.count("GET", "blob") == len(image.blobs)
    assert fake_gcs.names(bucket) == sorted(object_name(b.digest) for b in image.blobs)
    for blob in image.blobs:
        assert fake_gcs.get(bucket, object_name(blob.digest)) == blob.data

    fake.reset_counts()
    with replica(tmp_path / "b", fake, fake_gcs.url, bucket) as b:
        big = image.layers[0]
        assert httpx.get(f"{b.url}/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
        ranged = httpx.get(
            f"{b.url}/v2/{REPO}/blobs/{big.digest}", headers={"Range": "bytes=10-19"}
        )
        assert ranged.status_code == 206 and ranged.content == big.data[10:20]
        pull(b, image)
        assert tier(b, "hit") == len(image.blobs)
        settle(b)
        assert tier(b, "uploaded") == 0  # nothing came from GAR: nothing to write
        pull(b, image)  # now from B's own disk
        assert tier(b, "hit") == len(image.blobs)
    # No blob bytes from GAR; one HEAD per blob says proj/repo holds it (the bucket is
    # shared by every repository), then B's scope record answers.
    assert fake.count("GET", "blob") == 0 and fake.count("HEAD", "blob") == len(image.blobs)
    assert fake.count("GET", "manifest") == 1  # manifests still come from GAR


def test_a_bad_copy_in_the_bucket_is_not_served_and_is_replaced(
    tmp_path: Path, fake: FakeGAR, fake_gcs: FakeGCS, bucket: str
) -> None:
    image = _image(2)
    fake.put_image("us", REPO, "1.0", image)
    big, small = image.layers
    wrong = bytearray(big.data)
    wrong[1000] ^= 0xFF
    fake_gcs.put(bucket, object_name(big.digest), bytes(wrong))  # same length, one bit off
    fake_gcs.put(bucket, object_name(small.digest), small.data[:-3])  # cut short
    with replica(tmp_path / "b", fake, fake_gcs.url, bucket) as b:
        pull(b, image)  # every byte checked by pull
        assert tier(b, "corrupt") == 2
        settle(b)
        assert tier(b, "uploaded") == len(image.blobs)
    assert fake.count("GET", "blob") == len(image.blobs)
    for blob in image.blobs:  # the bad copies were overwritten with GAR's
        assert fake_gcs.get(bucket, object_name(blob.digest)) == blob.data


async def _unavailable(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b"backend error"})


@contextlib.contextmanager
def broken_storage(how: str) -> Iterator[str]:
    if how == "5xx":
        with serve_in_thread(_unavailable) as url:
            yield url
        return
    with serve_in_thread(_unavailable) as url:
        pass  # stopped: nothing listens on its port any more
    yield url


@pytest.mark.parametrize("how", ["unreachable", "5xx"])
def test_a_bucket_that_is_down_leaves_pulls_to_gar(tmp_path: Path, fake: FakeGAR, how: str) -> None:
    image = _image(3)
    fake.put_image("us", REPO, "1.0", image)
    with broken_storage(how) as api, replica(tmp_path, fake, api, "down") as running:
        pull(running, image)
        assert tier(running, "error") == len(image.blobs)
        settle(running)
        assert tier(running, "upload_failed") == len(image.blobs)
        assert tier(running, "uploaded") == 0
    assert fake.count("GET", "blob") == len(image.blobs)


def test_the_shared_setting_names_a_bucket_and_prefix(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "GAR_PROXY_CACHE_SHARED": "gs://team-cache/gar/proxy/"}
    settings = load_settings(env=env)
    assert settings.cache.shared == SharedBucket("team-cache", "gar/proxy")
    assert settings.cache.shared.object_name("sha256", "ab") == "gar/proxy/sha256/ab"
    assert dict(describe(settings))["cache.shared"] == "gs://team-cache/gar/proxy"
    assert load_settings(env={"HOME": str(tmp_path)}).cache.shared is None  # off
    assert load_settings(env={**env, "GAR_PROXY_CACHE_SHARED": ""}).cache.shared is None
    bare = load_settings(env={**env, "GAR_PROXY_CACHE_SHARED": "gs://team-cache"})
    assert bare.cache.shared == SharedBucket("team-cache", "")
    for bad, why in [
        ("team-cache/x", "expected gs://BUCKET/PREFIX"),
        ("s3://team-cache", "expected gs://BUCKET/PREFIX"),
        ("gs://Team", "not a Cloud Storage bucket name"),
        ("gs://ab", "not a Cloud Storage bucket name"),
        ("gs://-cache", "not a Cloud Storage bucket name"),
        ("gs://team-cache//x", "non-empty, printable parts"),
        ("gs://team-cache/a/../b", "non-empty, printable parts"),
    ]:
        named = r"^cache.shared \(GAR_PROXY_CACHE_SHARED\): "
        with pytest.raises(ConfigError, match=named + ".*" + why):
            load_settings(env={**env, "GAR_PROXY_CACHE_SHARED": bad})


def test_the_bucket_serves_a_repository_only_blobs_it_holds_upstream(
    tmp_path: Path, fake: FakeGAR, fake_gcs: FakeGCS, bucket: str
) -> None:
    image = _image(4)
    fake.put_image("us", REPO, "1.0", image)
    secret = image.layers[0]
    fake_gcs.put(bucket, object_name(secret.digest), secret.data)  # another team's blob
    with replica(tmp_path, fake, fake_gcs.url, bucket) as running:
        got = httpx.get(f"{running.url}/v2/proj/repo/other/blobs/{secret.digest}", timeout=30)
        assert got.status_code == 404 and got.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert tier(running, "hit") == 0
    assert fake.count("HEAD", "blob") == 1  # asked GAR whether proj/repo/other holds it
