"""Docker image manifest v2 schema 1 through the proxy (GAR supports it: docs/GAR.md N1).

A signed ("prettyjws") schema-1 manifest has two possible names: the digest of its
signed payload (distribution's rule, what docker expects) and the digest of the bytes
served. Which one GAR uses is not documented (N2), so the fake plays each and the proxy
must push and pull under either, keep the exact bytes, and name the manifest as
upstream does.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import make_layer
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.schema1 import Schema1, build_schema1
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/old"
ACCEPT = {"Accept": f"{mt.DOCKER_MANIFEST_V1_SIGNED}, {mt.DOCKER_MANIFEST_V1}"}


def named(old: Schema1, rule: str) -> str:
    """The digest a registry following ``rule`` names ``old`` by."""
    if old.media_type == mt.DOCKER_MANIFEST_V1_SIGNED and rule == "canonical":
        return old.canonical_digest
    return old.raw_digest


def pulled_back(fake: FakeGAR, cache: Path, old: Schema1, digest: str) -> list[httpx.Response]:
    """A proxy with an empty cache pulls the manifest by tag, then by digest."""
    with (
        run_proxy(proxy_settings(cache, fake.upstream)) as fresh,
        httpx.Client(base_url=fresh.url, timeout=30) as http,
    ):
        return [
            http.get(f"/v2/{REPO}/manifests/v1", headers=ACCEPT),
            http.get(f"/v2/{REPO}/manifests/{digest}", headers=ACCEPT),
            http.head(f"/v2/{REPO}/manifests/{digest}", headers=ACCEPT),
        ]


@pytest.mark.parametrize("rule", ["canonical", "raw"])
@pytest.mark.parametrize("signed", [True, False], ids=["prettyjws", "unsigned"])
def test_signed_schema1_is_pushed_and_pulled_through_the_proxy(
    rule: str,
    signed: bool,
    fake_gar: FakeGarFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
) -> None:
    fake = fake_gar(auth="none", schema1_digest=rule)
    layers = [make_layer({"old": b"1"}), make_layer({"older": b"2"})]
    old = build_schema1(REPO, "v1", layers, signed=signed)
    for layer in layers:
        fake.put_blob("us", REPO, layer)  # creates the repository, as gcloud would
    digest = named(old, rule)
    running = proxy(fake.upstream)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        pushed = http.put(
            f"/v2/{REPO}/manifests/v1",
            content=old.manifest,
            headers={"Content-Type": old.media_type},
        )
        cached = http.get(f"/v2/{REPO}/manifests/v1", headers=ACCEPT)
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["docker-content-digest"] == digest  # as upstream names it
    assert fake.get_manifest("us", REPO, "v1") == (old.manifest, old.media_type)  # bytes kept
    assert cached.content == old.manifest
    assert cached.headers["docker-content-digest"] == digest
    assert fake.count("GET", "manifest") == 0  # the push filled the cache

    by_tag, by_digest, head = pulled_back(fake, tmp_path / "fresh", old, digest)
    for answer in (by_tag, by_digest):
        assert answer.status_code == 200, answer.text
        assert answer.content == old.manifest
        assert answer.headers["content-type"] == old.media_type
        assert answer.headers["docker-content-digest"] == digest
    assert head.status_code == 200 and head.headers["docker-content-digest"] == digest


def test_a_schema1_manifest_pushed_by_digest_takes_either_name(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")  # distribution's rule
    layer = make_layer({"d": b"3"})
    fake.put_blob("us", REPO, layer)
    old = build_schema1(REPO, "v2", [layer])
    running = proxy(fake.upstream)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        wrong = http.put(
            f"/v2/{REPO}/manifests/sha256:{'0' * 64}",
            content=old.manifest,
            headers={"Content-Type": old.media_type},
        )
        right = http.put(
            f"/v2/{REPO}/manifests/{old.canonical_digest}",
            content=old.manifest,
            headers={"Content-Type": old.media_type},
        )
    assert wrong.status_code == 400 and wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert right.status_code == 201, right.text
    assert right.headers["docker-content-digest"] == old.canonical_digest


def test_a_schema1_manifest_whose_layers_are_missing_is_refused_before_upstream(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "repo")
    old = build_schema1(REPO, "v1", [make_layer({"m": b"missing"})])
    running = proxy(fake.upstream)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        pushed = http.put(
            f"/v2/{REPO}/manifests/v1",
            content=old.manifest,
            headers={"Content-Type": old.media_type},
        )
    assert pushed.status_code == 400
    assert pushed.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert fake.count("PUT", "manifest") == 0
