"""The bucket must not serve repository A a blob that A does not hold upstream,
even when a manifest in A lists it as a foreign (non-distributable, ``urls``) layer:
such layers are never checked on push (manifest_writes._foreign_layers) and GAR does
not require them, yet ``scopes.referenced`` counts them as held."""

from __future__ import annotations

import pytest

from proxy.cache.manifest_rows import ManifestRow
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from tests.services.test_shared_tier_service import REPO, World, world  # noqa: F401  # the fixture


async def test_bucket_copy_not_served_through_a_foreign_layer_reference(world: World) -> None:  # noqa: F811
    secret = b"another repository's private layer" * 1000
    digest = Digest.of(secret, "sha256")
    # Pulled by someone from a repository REPO cannot read, so it is in the bucket...
    world.bucket.objects[world.shared.name(digest)] = secret
    # ...and a manifest pushed to REPO lists it as a foreign layer (urls: not checked).
    body = (
        b'{"schemaVersion":2,"layers":[{"digest":"%s","urls":["https://x"]}]}'
        % str(digest).encode()
    )
    manifest = Digest.of(body, "sha256")
    await world.cache.index.manifests.put(
        ManifestRow(manifest, "application/vnd.oci.image.manifest.v1+json", len(body), body),
        [digest],
    )
    await world.cache.index.scopes.add(str(REPO), manifest)
    world.bucket.gate.set()
    # GAR does not hold the blob in REPO: without the tier this is BLOB_UNKNOWN.
    with pytest.raises(RegistryError):
        await world.blobs.get(REPO, digest, None)
