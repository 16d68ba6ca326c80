"""Writes as a hostile client with real credentials tries them: what a push can make the
proxy copy out of its cache, and whose upload session a request may touch.

The cache is content addressed: a blob or manifest root pulled from ``alpha/secret`` sits
on the same disk as alice's. A manifest PUT naming it must not make the proxy write it
into alice's repository (from where she pulls it): the cache lends a write only what
the target repository already holds in its scope, or what a repository the caller may
pull holds. Setup: ``tests/auth/accesskit.py`` (alice pushes ``alpha/team``, builder
pushes it too and pulls ``gamma/hub``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.oci import mediatypes as mt
from testkit.images import Blob, Image
from tests.auth.accesskit import Answer, Setup, basic, call, seeded_proxy


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("hostile-writes")
    with seeded_proxy(directory, access__failed_login_burst="1000") as seeded:
        yield seeded


def _manifest(config: Blob, *layers: Blob) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return json.dumps(body).encode()


def _put(setup: Setup, who: str, repo: str, tag: str, body: bytes, media_type: str) -> Answer:
    headers = {**basic(who), "Content-Type": media_type}
    return call(setup.url, "PUT", f"/v2/{repo}/manifests/{tag}", headers, body)


def test_a_manifest_naming_a_blob_cached_for_an_unreadable_repository_copies_nothing(
    setup: Setup,
) -> None:
    """alice knows the digest of alpha/secret's layer (root pulled it, so the cache holds
    it): her manifest naming it is refused as upstream would refuse it, the layer never
    reaches her repository, and she cannot pull it from there."""
    team, secret = setup.images["alpha/team/app"], setup.images["alpha/secret/app"]
    stolen = secret.layers[0]
    answer = _put(setup, "alice", "alpha/team/app", "stolen",
                  _manifest(team.config, stolen), mt.OCI_MANIFEST)  # fmt: skip
    assert answer.status == 400 and answer.code == "MANIFEST_BLOB_UNKNOWN", answer.body[:300]
    assert setup.fake.get_blob("us", "alpha/team/app", stolen.digest) is None
    pulled = call(setup.url, "GET", f"/v2/alpha/team/app/blobs/{stolen.digest}", basic("alice"))
    assert pulled.status == 404 and stolen.data not in pulled.body


def test_an_index_naming_a_manifest_cached_for_an_unreadable_repository_copies_nothing(
    setup: Setup,
) -> None:
    secret: Image = setup.images["alpha/secret/app"]
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [secret.descriptor()]}  # fmt: skip
    answer = _put(setup, "alice", "alpha/team/other", "stolen",
                  json.dumps(index).encode(), mt.OCI_INDEX)  # fmt: skip
    assert answer.status == 400 and answer.code == "MANIFEST_BLOB_UNKNOWN", answer.body[:300]
    assert setup.fake.get_manifest("us", "alpha/team/other", secret.digest) is None
    for blob in secret.blobs:
        assert setup.fake.get_blob("us", "alpha/team/other", blob.digest) is None
    pulled = call(setup.url, "GET", f"/v2/alpha/team/other/manifests/{secret.digest}",
                  basic("alice"))  # fmt: skip
    assert pulled.status == 404


def test_a_manifest_naming_a_blob_of_a_readable_repository_is_completed_from_the_cache(
    setup: Setup,
) -> None:
    """builder may pull the Docker Hub mirror: a manifest of hers naming its cached layer
    is completed from the cache (as a copy between repositories she can read and write)."""
    team, alpine = setup.images["alpha/team/app"], setup.images["gamma/hub/library/alpine"]
    layer = alpine.layers[0]
    assert setup.fake.get_blob("us", "alpha/team/app", layer.digest) is None
    answer = _put(setup, "builder", "alpha/team/app", "with-alpine",
                  _manifest(team.config, layer), mt.OCI_MANIFEST)  # fmt: skip
    assert answer.status == 201, answer.body[:300]
    assert setup.fake.get_blob("us", "alpha/team/app", layer.digest) == layer.data
