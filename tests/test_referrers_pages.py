"""A referrers index in pages: the proxy's ``Link`` names itself and the name as sent.

The spec names no parameter for a referrers page: the ``Link`` upstream sends is its own
URL with an opaque query. Passed through as written, it sent a client to GAR's host (out
of the proxy, where its credentials do not work) or to the proxy path without the
``ns`` that chose the repository. These follow the Links through a real proxy to a fake
GAR that pages its referrers behind an opaque cursor (base64 with ``+``, ``/`` and
``=``), and check: every referrer once, every page from the repository the client
named, each Link the proxy's own with the client's ``ns``, and upstream's cursor
reaching upstream unchanged. A Link to another host is never passed on nor followed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_artifact, build_image, make_layer
from testkit.paging import follow_pages
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

MIRRORS: list[dict[str, Any]] = [
    {"host": "docker.io", "repository": "proj/hub", "location": "us", "listen": "127.0.0.1:0"}
]
SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IMAGE = build_image([make_layer({"r": b"1"})])
KINDS = [SBOM if i % 2 else SIGNATURE for i in range(8)]  # 4 of each
REFERRERS = [build_artifact(IMAGE, kind, b"%d" % i) for i, kind in enumerate(KINDS)]


def stock(fake: FakeGAR, name: str, referrers: list[Image]) -> None:
    fake.put_image("us", name, "1.0", IMAGE)
    for artifact in referrers:
        fake.put_image("us", name, None, artifact)


@pytest.fixture
def running(fake_gar: FakeGarFactory, proxy: ProxyFactory) -> tuple[FakeGAR, RunningProxy]:
    fake = fake_gar(auth="none")
    fake.referrers_page_size = 3
    stock(fake, "proj/hub/library/alpine", REFERRERS)
    stock(fake, "proj/repo/app", REFERRERS)
    # Where a Link that lost ``ns`` would land: its referrer must never show up.
    stock(fake, "proj/library/alpine", [build_artifact(IMAGE, SBOM, b"decoy")])
    return fake, proxy(fake.upstream, routing__mirrors=MIRRORS, gcp__project_id="proj")


def follow(base: str, path: str, params: dict[str, str]) -> tuple[list[str], list[str]]:
    """Every page's referrer digests, in order, and the Links followed to get them."""
    return follow_pages(
        base, path, params, lambda body: [d["digest"] for d in body["manifests"]], 20
    )


def wanted(kind: str | None = None) -> list[str]:
    """The referrers' digests in the fake's order (by digest), of ``kind`` or all."""
    return sorted(a.digest for a, k in zip(REFERRERS, KINDS, strict=True) if kind in (None, k))


@pytest.mark.parametrize(
    ("name", "params"),
    [("library/alpine", {"ns": "docker.io"}), ("proj/repo/app", {})],
    ids=["ns", "plain"],
)
@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
def test_following_referrers_links_pages_the_repository_the_client_named(
    running: tuple[FakeGAR, RunningProxy], name: str, params: dict[str, str], absolute: bool
) -> None:
    fake, proxy = running
    fake.absolute_locations = absolute  # GAR's Link form is unknown (N8): both
    digests, links = follow(proxy.url, f"/v2/{name}/referrers/{IMAGE.digest}", params)
    assert digests == wanted()  # every referrer once, none of the decoy's
    assert len(links) == 2  # 8 referrers, 3 a page
    cursors = []
    for link in links:
        assert urlsplit(link).path == f"/v2/{name}/referrers/{IMAGE.digest}", link
        query = parse_qsl(urlsplit(link).query)
        assert [k for k, _ in query] == [*params, "cursor"], link  # ns first, once
        assert dict(query).get("ns") == params.get("ns")
        cursors.append(dict(query)["cursor"])
    assert all(c.startswith("+/") and c.endswith("=") for c in cursors)
    # Upstream got its own cursors back unchanged, from the repository the client named.
    seen = [dict(parse_qsl(q)).get("cursor") for q in fake.referrers_queries]
    assert seen == [None, *cursors]
    mapped = "proj/hub/library/alpine" if params else name
    assert fake.count("GET", "referrers", path=f"/v2/{mapped}/referrers/") == 3


def test_the_filter_rides_along_and_a_filtered_first_page_is_kept(
    running: tuple[FakeGAR, RunningProxy],
) -> None:
    fake, proxy = running
    params = {"ns": "docker.io", "artifactType": SBOM}
    path = f"/v2/library/alpine/referrers/{IMAGE.digest}"
    digests, links = follow(proxy.url, path, params)
    assert digests == wanted(SBOM) and len(links) == 1  # 4 SBOMs: a page and one more
    assert [k for k, _ in parse_qsl(urlsplit(links[0]).query)] == ["ns", "artifactType", "cursor"]
    assert dict(parse_qsl(fake.referrers_queries[-1]))["artifactType"] == SBOM
    asked = fake.count("GET", "referrers")
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        again = http.get(path, params=params)  # within cache.tag_ttl: the kept page
        plain = http.get(
            f"/v2/proj/hub/library/alpine/referrers/{IMAGE.digest}", params={"artifactType": SBOM}
        )
    assert fake.count("GET", "referrers") == asked
    assert again.headers["link"] == f'<{links[0]}>; rel="next"'
    # The same kept page, asked by the mirror repository's own GAR name: its Link names
    # it that way, without an ns.
    assert plain.status_code == 200 and plain.content == again.content, plain.text
    link = plain.headers["link"]
    assert link.startswith(
        f"</v2/proj/hub/library/alpine/referrers/{IMAGE.digest}?artifactType="
    ), link


def test_a_repeated_parameter_is_refused_before_upstream(
    running: tuple[FakeGAR, RunningProxy],
) -> None:
    fake, proxy = running
    path = f"/v2/proj/repo/app/referrers/{IMAGE.digest}"
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for query in ("cursor=a&cursor=b", "artifactType=x&artifactType=y"):
            answer = http.get(f"{path}?{query}")
            assert answer.status_code == 400, query
            assert answer.json()["errors"][0]["code"] == "QUERY_INVALID"
    assert fake.count("GET", "referrers") == 0


def test_a_link_to_another_host_is_dropped_and_said_once(
    running: tuple[FakeGAR, RunningProxy], caplog: pytest.LogCaptureFixture
) -> None:
    fake, proxy = running
    fake.referrers_link_host = "elsewhere.example:443"
    caplog.set_level(logging.WARNING, logger="gar_proxy.upstream")
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for name, params in (("proj/repo/app", {}), ("library/alpine", {"ns": "docker.io"})):
            answer = http.get(f"/v2/{name}/referrers/{IMAGE.digest}", params=params)
            assert answer.status_code == 200
            assert "link" not in answer.headers  # neither passed on nor followed
            assert [d["digest"] for d in answer.json()["manifests"]] == wanted()[:3]
    assert fake.count("GET", "referrers") == 2
    said = [r.getMessage() for r in caplog.records if "next page of referrers" in r.getMessage()]
    assert len(said) == 1, said
    assert "elsewhere.example" in said[0] and "cursor" not in said[0] and "?" not in said[0]
