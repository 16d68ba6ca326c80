"""A tag that moves at GAR is followed through the proxy, whatever a HEAD there says.

The proxy revalidates a tag past its TTL with a manifest ``HEAD`` (docs/DESIGN.md §3).
Whether GAR's HEAD carries ``Docker-Content-Digest`` and a length, and whether its
``Content-Type`` has parameters, is open (the twin's knobs): a HEAD that cannot say
which manifest the tag names must not keep the old one in place.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.images import build_image, make_layer
from tests.twin.conftest import ThroughFactory, TwinFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
NAME = "proj/repo/app"
VARIANTS: dict[str, dict[str, Any]] = {
    "as-recorded": {},
    "no-digest-header": {"manifest_digest": False},
    "no-digest-no-length": {"manifest_digest": False, "manifest_head_length": False},
    "type-with-parameters": {"manifest_type_params": True},
    "gzip-and-chunked": {"gzip": True, "manifest_chunked": True, "manifest_digest": False},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_moved_tag_is_followed_once_its_ttl_is_over(
    variant: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    served = twin(**VARIANTS[variant])
    old = build_image([make_layer(seed=41)])
    new = build_image([make_layer(seed=42)], fmt="docker")
    served.put_image(NAME, "latest", old)
    running = through(served, cache__tag_ttl="0s", cache__revalidate_window="0s")
    url = f"/v2/{NAME}/manifests/latest"
    with httpx.Client(base_url=running.url, timeout=30) as client:
        first = client.get(url, headers=ACCEPT)
        assert first.content == old.manifest
        served.put_image(NAME, "latest", new)
        head = client.head(url, headers=ACCEPT)
        moved = client.get(url, headers=ACCEPT)
    assert head.status_code == 200 and head.headers["docker-content-digest"] == new.digest
    assert moved.status_code == 200 and moved.content == new.manifest
    assert moved.headers["docker-content-digest"] == new.digest
    assert moved.headers["content-type"] == new.media_type
