"""Pulls through the proxy from the GAR twin, one test per answer GAR could give.

Each variant is a reading of the evidence the record leaves open (docs/GAR.md D1-D5,
A1-A6, N3): the redirect's status and form, a download on another host, HEADs that
redirect or name no length, Range ignored, chunked or gzip'd bodies, manifest headers
with parameters or missing, every token answer shape. Whatever the twin does, the client
gets the right bytes under the right headers, the cache holds only verified blobs, and
no signed path reaches a response.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit import invariants
from testkit.fakes.gar_twin import GarTwin
from testkit.images import Index, build_image, build_index, make_layer
from tests.twin.conftest import ThroughFactory, TwinFactory, assert_never_named

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
NAME = "proj/repo/app"

VARIANTS: dict[str, dict[str, Any]] = {
    "as-recorded": {},
    "redirect-307": {"download_status": 307},
    "redirect-303": {"download_status": 303},
    "blob-served-directly": {"download_status": 200},
    "absolute-download-location": {"download_location": "absolute"},
    "download-on-a-storage-host": {"download_location": "storage"},
    "head-redirects-too": {"head_redirects": True},
    "head-without-length": {"head_length": False},
    "range-ignored": {"ranges": False},
    "chunked-download": {"download_chunked": True},
    "gzip-when-accepted": {"gzip": True},
    "manifest-type-with-parameters": {"manifest_type_params": True},
    "manifest-without-digest-header": {"manifest_digest": False},
    "manifest-head-without-length": {"manifest_head_length": False},
    "manifest-chunked": {"manifest_chunked": True},
    "token-as-access_token": {"token_field": "access_token"},
    "token-in-both-fields": {"token_field": "both"},
    "token-without-expiry": {"expires_in": None, "issued_at": False},
    "token-expiring-at-once": {"expires_in": 0},
    "token-expiry-as-a-string": {"expires_in": "3600"},
    "token-expiry-unreadable": {"expires_in": "one hour"},
    "token-expiry-negative": {"expires_in": -5},
    "challenge-with-service-and-scope": {"challenge_service": True, "challenge_scope": True},
    "realm-with-a-query": {"realm_query": "client=twin&region=us"},
    "token-dies-after-3-requests": {"token_uses": 3},
    "google-token-not-taken-directly": {"raw_bearer": False},
    "basic-challenge-before-bearer": {"basic_challenge_first": True},
    "no-keep-alive": {"close_connections": True},
    "head-redirects-to-a-storage-host-without-length": {
        "head_redirects": True,
        "download_location": "storage",
        "head_length": False,
    },
}


def index_image() -> Index:
    return build_index(
        [
            build_image([make_layer(size=300_000, seed=1), make_layer(seed=2)]),
            build_image([make_layer(size=120_000, seed=3)], architecture="arm64"),
        ]
    )


def check_manifest(response: httpx.Response, body: bytes, media_type: str, digest: str) -> None:
    assert response.status_code == 200, response.text
    assert response.content == body
    assert response.headers["content-type"].split(";")[0].strip() == media_type
    assert response.headers["docker-content-digest"] == digest


def pull(client: httpx.Client, index: Index, downloads: invariants.Downloads) -> list[str]:
    """The manifests by tag and digest, every blob (HEAD and GET), one range; the texts
    seen (for the never-named check)."""
    seen: list[str] = []
    head = client.head(f"/v2/{NAME}/manifests/v1", headers=ACCEPT)
    assert head.status_code == 200, head.headers
    assert head.headers["docker-content-digest"] == index.digest
    assert head.headers["content-length"] == str(len(index.manifest))
    got = client.get(f"/v2/{NAME}/manifests/v1", headers=ACCEPT)
    check_manifest(got, index.manifest, index.media_type, index.digest)
    for image in index.images:
        child = client.get(f"/v2/{NAME}/manifests/{image.digest}", headers=ACCEPT)
        check_manifest(child, image.manifest, image.media_type, image.digest)
        for blob in image.blobs:
            url = f"/v2/{NAME}/blobs/{blob.digest}"
            head = client.head(url)
            assert head.status_code == 200 and head.headers["content-length"] == str(blob.size)
            seen.append(str(dict(head.headers)))
            fetched = downloads.get(client, url, blob.digest)
            assert fetched.complete and fetched.actual == blob.digest, fetched
    biggest = index.images[0].layers[0]
    ranged = client.get(f"/v2/{NAME}/blobs/{biggest.digest}", headers={"Range": "bytes=10-99"})
    assert ranged.status_code == 206 and ranged.content == biggest.data[10:100]
    seen += [str(dict(got.headers)), str(dict(ranged.headers))]
    return seen


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_pull_gets_the_right_bytes_whatever_gar_answers(
    variant: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    served: GarTwin = twin(**VARIANTS[variant])
    index = index_image()
    served.put_image(NAME, "v1", index)
    running = through(served)
    downloads = invariants.Downloads()
    with httpx.Client(base_url=running.url, timeout=30) as client:
        seen = pull(client, index, downloads)
        before = served.count("GET", "blob") + served.count("GET", "manifest")
        warm = pull(client, index, downloads)  # from the cache: GAR sees no blob or digest GET
        after = served.count("GET", "blob") + served.count("GET", "manifest")
    assert after - before <= 1, "the warm pull went to GAR"  # at most the tag's revalidation
    report = invariants.check(running.settings.cache.dir, downloads)
    assert report.ok, report.problems
    assert_never_named(seen + warm, served)


@pytest.mark.parametrize("expires_in", [3600, "3600", "one hour", -5, None])
def test_a_registry_token_is_bought_once_per_scope_whatever_its_expiry_says(
    expires_in: object, twin: TwinFactory, through: ThroughFactory
) -> None:
    served: GarTwin = twin(expires_in=expires_in)
    index = index_image()
    served.put_image(NAME, "v1", index)
    running = through(served)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        for image in index.images:
            for blob in image.blobs:
                assert client.get(f"/v2/{NAME}/blobs/{blob.digest}").content == blob.data
    # A lifetime it cannot read is a short one, never none: a trade per request is
    # a token endpoint hammered (and GAR's tokens live an hour).
    assert served.count("GET", "token") <= 2
