"""A listing's ``Link`` to its next page names the repository the page came from.

A client that follows ``Link: <...>; rel="next"`` (the spec tells it to prefer that over
building ``last``) must page through the same repository on every spelling of its name:
containerd's ``?ns=`` maps ``library/alpine`` onto a mirror's GAR repository, and a Link
that dropped ``ns`` sent the second page to another repository (a 404, or with rules a
403). These follow the Links through a real proxy to a fake GAR holding more tags than
one page, until there are none, and check the union is the whole list, each tag once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import build_image, make_layer
from testkit.paging import follow_pages
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
MIRRORS: list[dict[str, Any]] = [
    {"host": "docker.io", "repository": "proj/hub", "location": "us", "listen": "127.0.0.1:0"},
    # A host with a port: its ``ns`` must reach the next page percent-encoded and intact.
    {"host": "registry.example:5000", "repository": "proj/other", "location": "us"},
]
TAGS = sorted([f"1.{i}" for i in range(7)] + ["latest", "v_2", "x-y"])
PLAIN = "proj/repo/app"


@pytest.fixture
def running(fake_gar: FakeGarFactory, proxy: ProxyFactory) -> tuple[FakeGAR, RunningProxy]:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"l": b"1"})])
    for name in ("proj/hub/library/alpine", "proj/other/team/tool", PLAIN):
        for tag in TAGS:
            fake.put_image("us", name, tag, image)
    # A decoy where a Link that lost ``ns`` would land: its tags must never show up.
    fake.put_image("us", "proj/repo/library/alpine", "decoy", image)
    return fake, proxy(fake.upstream, routing__mirrors=MIRRORS, gcp__project_id="proj")


def follow(base: str, path: str, params: dict[str, str]) -> tuple[list[str], list[str]]:
    """Every page's tags, in order, and the Links followed to get them."""
    return follow_pages(base, path, params, lambda body: body["tags"])


@pytest.mark.parametrize("n", ["3", "4", "1"])
def test_following_links_through_ns_pages_the_mirror_repository(
    running: tuple[FakeGAR, RunningProxy], n: str
) -> None:
    fake, proxy = running
    tags, links = follow(proxy.url, "/v2/library/alpine/tags/list", {"ns": "docker.io", "n": n})
    assert tags == TAGS  # the whole list, each tag once, in order
    assert len(links) == -(-len(TAGS) // int(n)) - 1  # one page per n tags
    for link in links:
        query = dict(parse_qsl(urlsplit(link).query))
        assert query["ns"] == "docker.io" and query["n"] == n, link
    assert fake.count("GET", "tags") == len(links) + 1


def test_an_ns_with_a_port_is_encoded_and_kept(running: tuple[FakeGAR, RunningProxy]) -> None:
    _, proxy = running
    params = {"ns": "registry.example:5000", "n": "4"}
    tags, links = follow(proxy.url, "/v2/team/tool/tags/list", params)
    assert tags == TAGS
    assert links and all("ns=registry.example%3A5000&" in link for link in links), links


@pytest.mark.parametrize(
    "where, path",
    [
        ("main", f"/v2/{PLAIN}/tags/list"),  # the plain GAR path
        ("main", "/v2/docker.io/library/alpine/tags/list"),  # host-qualified
        ("main", "/v2/proj/hub/library/alpine/tags/list"),  # the mirror's GAR path
        ("mirror", "/v2/library/alpine/tags/list"),  # the mirror's own listener
        ("mirror", "/v2/alpine/tags/list"),  # Docker Hub's library/ rule on it
    ],
)
def test_every_other_spelling_pages_its_own_repository(
    running: tuple[FakeGAR, RunningProxy], where: str, path: str
) -> None:
    _, proxy = running
    base = proxy.url if where == "main" else proxy.mirror_url("docker.io")
    tags, links = follow(base, path, {"n": "3"})
    assert tags == TAGS
    assert len(links) == 3
    assert all(urlsplit(link).path == path for link in links), links
    assert not any("ns=" in link for link in links)


def test_n_zero_has_no_link(running: tuple[FakeGAR, RunningProxy]) -> None:
    _, proxy = running
    answer = httpx.get(
        f"{proxy.url}/v2/library/alpine/tags/list", params={"ns": "docker.io", "n": "0"}
    )
    assert answer.status_code == 200
    assert "link" not in answer.headers  # the spec: n=0 MUST NOT have a Link


def test_catalog_links_page_every_cached_repository_once(
    running: tuple[FakeGAR, RunningProxy],
) -> None:
    _, proxy = running
    pulls = [
        ("library/alpine", {"ns": "docker.io"}),
        ("team/tool", {"ns": "registry.example:5000"}),
        (PLAIN, {}),
        ("proj/repo/library/alpine", {}),
    ]
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for name, params in pulls:
            tag = "decoy" if name.startswith("proj/repo/library") else "latest"
            pulled = http.get(f"/v2/{name}/manifests/{tag}", params=params, headers=ACCEPT)
            assert pulled.status_code == 200, pulled.text
        whole = http.get("/v2/_catalog").json()["repositories"]
        assert len(whole) == 4, whole
        listed: list[str] = []
        answer = http.get("/v2/_catalog", params={"n": "1"})
        while True:
            assert answer.status_code == 200, answer.text
            listed += answer.json()["repositories"]
            link = answer.headers.get("link")
            if link is None:
                break
            assert link.startswith("</v2/_catalog?n=1&last=") and "/" not in link.split("last=")[1]
            answer = http.get(link[1 : link.index(">")])
    assert listed == whole
