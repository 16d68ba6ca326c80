from __future__ import annotations

import json

import pytest

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.manifest import parse_manifest
from proxy.oci.platform import Platform

D = str(Digest.of(b"x"))


@pytest.mark.parametrize(
    ("available", "wanted", "ok"),
    [
        ("linux/amd64", "linux/x86_64", True),
        ("linux/arm64", "linux/aarch64", True),
        ("linux/arm/v7", "linux/armhf", True),
        ("linux/arm/v7", "linux/arm/v6", False),
        ("linux/amd64", "windows/amd64", False),
        ("Linux/AMD64", "linux/x86-64", True),
    ],
)
def test_platform_matching_normalises_architectures(available: str, wanted: str, ok: bool) -> None:
    assert Platform.parse(available).matches(Platform.parse(wanted)) is ok


def test_index_lists_platforms_and_children() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": D,
                    "size": 10,
                    "platform": {"os": "linux", "architecture": "arm64"},
                }
            ],
        }
    ).encode()
    manifest = parse_manifest(body)
    assert manifest.is_index
    assert [str(p) for p in manifest.platforms()] == ["linux/arm64"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}).encode(),
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": {"digest": "sha256:zz", "size": 1},
                "layers": [],
            }
        ).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": "text/plain", "layers": []}).encode(),
    ],
)
def test_malformed_manifests_are_manifest_invalid(body: bytes) -> None:
    with pytest.raises(RegistryError) as raised:
        parse_manifest(body)
    assert raised.value.code is ErrorCode.MANIFEST_INVALID


def test_accept_negotiation() -> None:
    assert mt.accepts((), mt.OCI_INDEX)
    assert mt.accepts((mt.OCI_INDEX, mt.OCI_MANIFEST), mt.OCI_INDEX)
    assert not mt.accepts((mt.DOCKER_MANIFEST_V2,), mt.OCI_INDEX)
    assert not mt.accepts(("application/json",), mt.DOCKER_MANIFEST_V1_SIGNED)
    assert mt.parse_accept(["a/b; q=0.5, c/d", "a/b"]) == ("a/b", "c/d")
