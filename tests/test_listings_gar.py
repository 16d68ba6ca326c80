"""GAR's tag lists through the proxy: GCR-shaped (docs/GAR.md N3), at most 10,000 (N4).

The list passes through to clients unharmed (``child``, ``manifest`` and all), the
scheduled warm reads its ``tags`` (every page of them), and a whole list of 10,000
tags is said, in the log, to be possibly GAR's cut-off one.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from proxy.config.values import WarmSchedule
from proxy.services import listings
from proxy.services.scheduled_warm import matching_tags
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"


def seeded(fake_gar: FakeGarFactory, tags: list[str]) -> FakeGAR:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"l": b"listed"})])
    for tag in tags:
        fake.put_image("us", REPO, tag, image)
    fake.put_image("us", f"{REPO}/nested", "x", image)  # a child
    return fake


def test_the_gcr_shaped_tag_list_passes_through_and_warming_reads_it(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tags = [f"v{n:03d}" for n in range(250)] + ["latest"]
    fake = seeded(fake_gar, tags)
    running = proxy(fake.upstream)
    direct = httpx.get(f"{fake.url}/us/v2/{REPO}/tags/list").json()
    with httpx.Client(base_url=running.url, timeout=30) as http:
        through = http.get(f"/v2/{REPO}/tags/list").json()
    assert through == direct  # every member, as GAR sent it
    assert through["child"] == ["nested"] and len(through["manifest"]) == 1
    wanted = running.call(matching_tags(running.services, WarmSchedule(REPO, r"^v0[0-4]")))
    assert wanted == [f"v{n:03d}" for n in range(50)]
    # A list over the proxy's body limit comes in pages: warming reads every one.
    running.services.listings.limit = 4000
    monkeypatch.setattr(listings, "PAGE_SIZE", 60)
    paged = running.call(matching_tags(running.services, WarmSchedule(REPO, r"^v")))
    assert paged == [f"v{n:03d}" for n in range(250)]


def test_a_list_at_gars_limit_is_said_to_be_incomplete(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fake = seeded(fake_gar, [f"t{n:05d}" for n in range(listings.GAR_LIST_LIMIT + 5)])
    running = proxy(fake.upstream)
    with httpx.Client(base_url=running.url, timeout=60) as http:
        whole = http.get(f"/v2/{REPO}/tags/list").json()
        page = http.get(f"/v2/{REPO}/tags/list", params={"n": "100"}).json()
        again = http.get(f"/v2/{REPO}/tags/list").json()
    assert len(whole["tags"]) == len(again["tags"]) == listings.GAR_LIST_LIMIT  # GAR's cut
    assert len(page["tags"]) == 100
    said = [r.getMessage() for r in caplog.records if "may be incomplete" in r.getMessage()]
    assert len(said) == 1  # once per repository
    assert "10000 tags" in said[0] and "at most 10000" in said[0]
