"""Tag lists from the GAR twin through the proxy: GCR's shape, paged either way.

GAR's tag list is GCR-shaped (docs/GAR.md N3); whether and how it pages (``n``,
``last``, a ``Link`` header relative or absolute) is unknown (N4). Whatever it does, a
client that follows the proxy's ``Link`` headers gets every tag once, and the links name
the proxy, never GAR's host.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from testkit.images import build_image, make_layer
from tests.twin.conftest import ThroughFactory, TwinFactory

NAME = "proj/repo/app"
TAGS = sorted(f"v{i:02d}" for i in range(7))
VARIANTS: dict[str, dict[str, Any]] = {
    "no-paging": {},
    "relative-links": {"tag_page": 3},
    "absolute-links": {"tag_page": 3, "link_absolute": True},
}


def follow(client: httpx.Client, first: str) -> tuple[list[str], list[str]]:
    """(every tag, every Link) of a listing, page after page."""
    tags: list[str] = []
    links: list[str] = []
    url: str | None = first
    while url is not None:
        page = client.get(url)
        assert page.status_code == 200, page.text
        body = json.loads(page.content)
        assert body["name"] == NAME
        tags += body["tags"]
        link = page.headers.get("link")
        url = None
        if link:
            links.append(link)
            url = link.split(">")[0].lstrip("<")
        assert len(links) < 10, "the pages never end"
    return tags, links


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("asked", [None, 2])
def test_every_tag_once_and_links_to_the_proxy(
    variant: str, asked: int | None, twin: TwinFactory, through: ThroughFactory
) -> None:
    served = twin(**VARIANTS[variant])
    image = build_image([make_layer(seed=5)])
    for tag in TAGS:
        served.put_image(NAME, tag, image)
    running = through(served)
    first = f"/v2/{NAME}/tags/list" + (f"?n={asked}" if asked else "")
    with httpx.Client(base_url=running.url, timeout=30) as client:
        tags, links = follow(client, first)
    assert tags == TAGS
    host = served.url.split("//")[1]
    assert not any(host in link for link in links), links


@pytest.mark.parametrize("nulls", [False, True], ids=["empty-lists", "nulls"])
def test_an_image_without_tags_lists_none(
    nulls: bool, twin: TwinFactory, through: ThroughFactory
) -> None:
    served = twin(nulls_for_empty=nulls)
    image = build_image([make_layer(seed=6)])
    served.put_image(NAME, image.digest, image)  # pushed by digest: no tag
    running = through(served)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        listed = client.get(f"/v2/{NAME}/tags/list")
        paged = client.get(f"/v2/{NAME}/tags/list", params={"n": "5"})
    for answer in (listed, paged):
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.content)["tags"] in ([], None)
