"""``/_gar-proxy/...``: the CLI's reports as JSON from the running server, loopback only."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request

from proxy.routes.admin import admin_allowed
from tests.conftest import ProxyFactory
from tests.gar.gatekit import Upstreams, upstreams

REPO = "proj/repo/app"


@pytest.fixture
def up() -> Iterator[Upstreams]:
    with upstreams() as served:
        yield served


def test_admin_paths_answer_the_reports_as_json(up: Upstreams, proxy: ProxyFactory) -> None:
    image = up.image(REPO, "v1", "admin")
    url = up.resource_url(REPO, image.digest)
    up.analysis.set_discovery(url, "FINISHED_SUCCESS")
    up.analysis.add_vulnerability(url, "CVE-2024-0009", "HIGH", "curl", "8.0", "8.1", 7.5)
    up.gar.add_repository("us", "proj", "repo", cleanup_policies={})
    running = proxy(up.upstream, apis__container_analysis=up.url, apis__artifact_registry=up.url)
    with httpx.Client(base_url=running.url + "/_gar-proxy", timeout=30) as http:
        vulns = http.get(f"/vulns/{REPO}:v1").json()
        assert vulns["digest"] == image.digest and vulns["counts"]["HIGH"] == 1
        assert vulns["findings"][0]["cve"] == "CVE-2024-0009"
        by_digest = http.get(f"/vulns/{REPO}@{image.digest}", params={"wait": "5"})
        assert by_digest.json()["findings"] == vulns["findings"]
        assert http.get(f"/sbom/{REPO}:v1").json()["sbom"] is None
        preview = http.get("/cleanup-preview/proj/us/repo").json()
        assert preview == {
            "repository": "projects/proj/locations/us/repositories/repo",
            "dry_run": False,
            "notes": [],
            "delete": [],
            "keep": [],
        }
        assert http.get("/where/proj/repo").json()["location"] == "us"
        bad = http.get(f"/vulns/{REPO}:v1", params={"wait": "9999"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "QUERY_INVALID"
        missing = http.get(f"/vulns/{REPO}:nope")
        assert missing.status_code == 404


def _request(host: str) -> Request:
    return Request({"type": "http", "client": (host, 5555), "headers": [], "method": "GET"})


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("10.0.0.5", False),
     ("192.168.1.2", False), ("testclient", False), ("", False)],
)  # fmt: skip
def test_only_loopback_clients_may_read_admin_paths(host: str, allowed: bool) -> None:
    assert admin_allowed(_request(host)) is allowed
