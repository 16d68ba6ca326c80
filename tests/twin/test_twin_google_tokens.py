"""The proxy with real google-auth (``upstream.auth = gcp``) against the GAR twin.

GAR takes the Google access token straight as ``Bearer`` (docs/GAR.md A2) and also
challenges with a realm where it can be traded (A1, A3). Which of the two a registry
path insists on, and the shape of the trade's answer, are the twin's knobs: whatever it
is, the proxy pulls and pushes with the key file's identity, and a raw token refused is
traded once, not per request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar_twin import GarTwin
from testkit.fakes.gar_twin_wire import Knobs
from testkit.fakes.google import FakeOAuth
from testkit.images import build_image, make_layer
from tests.conftest import ProxyFactory
from tests.twin.test_twin_push import containerd_way, docker_way

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
NAME = "proj/repo/app"
VARIANTS: dict[str, dict[str, Any]] = {
    "raw-token-taken": {},
    "raw-token-refused": {"raw_bearer": False},
    "refused-access_token-answer": {"raw_bearer": False, "token_field": "access_token"},
    "refused-service-and-scope": {"raw_bearer": False, "challenge_service": True,
                                  "challenge_scope": True, "expires_in": None},
    "refused-sessions-need-auth": {"raw_bearer": False, "session_auth": True},
}  # fmt: skip


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    issuer = FakeOAuth()
    with issuer.serving():
        yield issuer


@pytest.mark.parametrize("variant", VARIANTS)
def test_pull_and_push_with_a_service_account_key(
    variant: str, oauth: FakeOAuth, proxy: ProxyFactory, tmp_path: Path
) -> None:
    key = tmp_path / "key.json"
    key.write_text(json.dumps(oauth.service_account().info))
    served = GarTwin(Knobs(**VARIANTS[variant]), access_tokens=oauth.is_valid)
    served.add_repository("proj/repo")
    image = build_image([make_layer(size=100_000, seed=21)])
    with served.serve():
        served.put_image(NAME, "v1", image)
        running = proxy(served.url, upstream__auth="gcp", gcp__credentials_file=str(key))
        with httpx.Client(base_url=running.url, timeout=30) as client:
            got = client.get(f"/v2/{NAME}/manifests/v1", headers=ACCEPT)
            assert got.status_code == 200 and got.content == image.manifest, got.text
            for blob in image.blobs:
                assert client.get(f"/v2/{NAME}/blobs/{blob.digest}").content == blob.data
            for push in (docker_way, containerd_way):
                data = push.__name__.encode() * 5000
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                assert push(client, data, digest).status_code == 201
                assert served.store.blobs["proj/repo"][digest] == data
    trades = served.count("GET", "token")
    if VARIANTS[variant].get("raw_bearer", True):
        assert trades == 0  # the access token did
    else:
        assert 1 <= trades <= 3, trades  # one per scope (pull; push), not one per request
