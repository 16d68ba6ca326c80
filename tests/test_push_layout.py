"""``gar-proxy push``'s uploader against the GAR-shaped fake: every blob in one write
(a session takes no more); a write cut off is written again, whole, to a fresh session;
at most ``concurrency`` blobs go up at once; the first blob that fails for good stops
the push before any manifest."""

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


class InFlight:
    """ASGI wrapper counting blob upload PUTs in progress at the fake (its one loop)."""

    def __init__(self, app: Any) -> None:
        self.app, self.now, self.peak = app, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        counted = scope["type"] == "http" and scope["method"] == "PUT"
        counted = counted and "uploads/" in scope["path"]
        self.now += counted
        self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= counted


@pytest.fixture
def fake() -> FakeGAR:
    fake = FakeGAR(auth="none")
    fake.add_repository("us", "proj", "repo")
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
        services.registry, layout, "v1", target, concurrency=concurrency, say=lambda _: None
    )  # fmt: skip


async def test_a_write_cut_off_is_written_again_whole_to_a_fresh_session(
    fake: FakeGAR, served: tuple[InFlight, Services], tmp_path: Path
) -> None:
    layer = make_layer(size=300 * 1024, seed=3)
    image = build_image([layer])
    fake.cut_next_write(after=100 * 1024)  # the layer's first write (the config is small)
    await push(served[1], tmp_path, [layer], concurrency=1)
    digest = image.layers[0].digest
    assert fake.get_blob("us", REPO, digest) == layer
    assert fake.get_manifest("us", REPO, "v1") == (image.manifest, image.media_type)
    assert fake.count("PATCH", "upload") == 0  # never in pieces: GAR takes none
    assert fake.count("POST", "upload") == 3  # the config, the layer, and a fresh session
    assert fake.writes(digest) == 1  # the second, whole; the cut one stored nothing
    assert [w.accepted for w in fake.upload_writes if w.size > 90 * 1024] == [False, True]


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
    # A refusal to open a session is for good (a 403 on a session GAR opened is the
    # session's, and a fresh one is tried: docs/GAR.md U13).
    fake.add_fault(Fault(kind="upload", method="POST", status=403, times=1))
    fake.add_fault(Fault(kind="upload", method="PUT", delay=0.5))
    layers = [make_layer({f"f{i}": bytes([i]) * 100}) for i in range(8)]
    with pytest.raises(RegistryError):
        await push(served[1], tmp_path, layers, concurrency=2)
    assert fake.count("PUT", "manifest") == 0
    assert fake.count("POST", "upload") < 9  # the rest were never started
