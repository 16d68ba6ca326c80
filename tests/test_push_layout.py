"""``gar-proxy push``'s uploader against the fake GAR: a failed chunk resumes where
upstream's Range says (no new session, no byte sent twice beyond the failed chunk);
at most ``concurrency`` blobs go up at once; the first blob that fails for good
stops the push before any manifest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.commands.push_layout import push_layout
from proxy.oci.errors import RegistryError
from proxy.oci.names import ImageReference
from proxy.services.container import Services, open_services
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_model import Fault
from testkit.images import build_image, make_layer, write_oci_layout
from testkit.proxyharness import proxy_settings
from testkit.servers import serve_in_thread

REPO = "proj/repo/pushed"
CHUNK = 64 * 1024


class InFlight:
    """ASGI wrapper counting blob upload PUTs in progress at the fake (its one loop)."""

    def __init__(self, app: Any) -> None:
        self.app, self.now, self.peak = app, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        counted = scope["type"] == "http" and scope["method"] == "PUT"
        counted = counted and "/blobs/uploads/" in scope["path"]
        self.now += counted
        self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= counted


@pytest.fixture
def fake() -> FakeGAR:
    fake = FakeGAR(auth="none")
    fake.add_repository("us", "proj", "repo")  # GAR creates none on push
    return fake


@pytest.fixture
async def served(fake: FakeGAR, tmp_path: Path) -> AsyncIterator[tuple[InFlight, Services]]:
    counter = InFlight(fake)
    with serve_in_thread(counter) as url:
        async with open_services(proxy_settings(tmp_path, url + "/{location}")) as services:
            yield counter, services


async def push(services: Services, tmp_path: Path, layers: list[bytes], concurrency: int) -> None:
    image = build_image(layers)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    target = ImageReference.parse(f"us-docker.pkg.dev/{REPO}:v1")
    await push_layout(
        services.registry, layout, "v1", target, concurrency=concurrency, say=lambda _: None,
        chunk_size=CHUNK,
    )  # fmt: skip


async def test_a_failed_chunk_resumes_the_same_upload(
    fake: FakeGAR, served: tuple[InFlight, Services], tmp_path: Path
) -> None:
    layer = make_layer(size=5 * CHUNK, seed=3)  # 5 chunks and a bit (tar headers)
    fake.add_fault(Fault(kind="upload", method="PATCH", status=500, times=1))
    await push(served[1], tmp_path, [layer], concurrency=1)
    image = build_image([layer])
    assert fake.get_blob("us", REPO, image.layers[0].digest) == layer
    assert fake.get_manifest("us", REPO, "v1") == (image.manifest, image.media_type)
    assert fake.count("POST", "upload") == 2  # the config and the layer: one session each...
    chunks = -(-len(layer) // CHUNK)
    assert fake.count("PATCH", "upload") == chunks + 1  # ...and one chunk sent twice
    assert fake.count("GET", "upload") == 1  # asked where to resume


async def test_uploads_stay_within_the_concurrency_bound(
    fake: FakeGAR, served: tuple[InFlight, Services], tmp_path: Path
) -> None:
    fake.add_fault(Fault(kind="upload", method="PUT", delay=0.2))
    layers = [make_layer({f"f{i}": bytes([i]) * 100}) for i in range(7)]
    await push(served[1], tmp_path, layers, concurrency=3)
    assert served[0].peak == 3
    assert fake.count("PUT", "upload") == 8  # 7 layers and the config


async def test_the_first_failed_layer_stops_the_push(
    fake: FakeGAR, served: tuple[InFlight, Services], tmp_path: Path
) -> None:
    fake.add_fault(Fault(kind="upload", method="PUT", status=400, times=1))
    fake.add_fault(Fault(kind="upload", method="PUT", delay=0.5))
    layers = [make_layer({f"f{i}": bytes([i]) * 100}) for i in range(8)]
    with pytest.raises(RegistryError):
        await push(served[1], tmp_path, layers, concurrency=2)
    assert fake.count("PUT", "manifest") == 0
    assert fake.count("POST", "upload") < 9  # the rest were never started
