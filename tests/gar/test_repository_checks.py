"""Repository checks against the fake GAR's metadata API: format, mode, locations from
``projects.locations.list``, and an unavailable location's retry guidance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from proxy.cache.index import CacheIndex
from proxy.clock import ManualClock
from proxy.gar.repositories import RepositoryApi
from proxy.oci.errors import RegistryError
from proxy.services.repository_checks import RepositoryChecks
from proxy.upstream.google_api import GoogleApi
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_model import Fault
from testkit.images import build_image, make_layer
from tests.conftest import FakeGarFactory, ProxyFactory

ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def checked(fake: FakeGAR) -> dict[str, str]:
    return {"routing__check_repositories": "true", "apis__artifact_registry": fake.url}


def test_a_non_docker_repository_is_refused_naming_it_without_registry_requests(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "jars", format="MAVEN")
    running = proxy(fake.upstream, **checked(fake))
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for path in ("/manifests/v1", "/blobs/sha256:" + "a" * 64, "/manifests/v2"):
            answer = http.get(f"/v2/proj/jars/app{path}", headers=ACCEPT)
            error = answer.json()["errors"][0]
            assert (answer.status_code, error["code"]) == (400, "NAME_INVALID")
            assert error["message"] == (
                "projects/proj/locations/us/repositories/jars is a MAVEN repository;"
                " gar-proxy serves DOCKER repositories only"
            )
    assert fake.count(kind="manifest") == fake.count(kind="blob") == 0
    assert fake.count(kind="metadata", path="/repositories/jars$") == 1  # read once


def test_a_push_to_a_remote_repository_is_refused_naming_its_mode(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "mirror", mode="REMOTE_REPOSITORY")
    image = build_image([make_layer({"a": b"remote"})])
    fake.put_image("us", "proj/mirror/app", "v1", image)
    running = proxy(fake.upstream, **checked(fake))
    with httpx.Client(base_url=running.url, timeout=30) as http:
        assert http.get("/v2/proj/mirror/app/manifests/v1", headers=ACCEPT).status_code == 200
        push = http.post("/v2/proj/mirror/app/blobs/uploads/")
        assert push.status_code == 403
        assert (
            "REMOTE_REPOSITORY (a cache of another registry)" in push.json()["errors"][0]["message"]
        )
    assert fake.count("POST") == 0


def test_locations_come_from_the_api_with_the_built_in_list_as_fallback(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"a": b"new region"})])
    fake.put_image("moon-central1", "proj/repo/app", "v1", image)  # not in the built-in list
    fake.add_repository("moon-central1", "proj", "repo")
    running = proxy(fake.upstream, **checked(fake))
    with httpx.Client(base_url=running.url, timeout=30) as http:
        new = http.get(
            "/v2/moon-central1-docker.pkg.dev/proj/repo/app/manifests/v1", headers=ACCEPT
        )
        assert new.content == image.manifest
        mars = http.get("/v2/mars-docker.pkg.dev/proj/repo/app/manifests/v1", headers=ACCEPT)
        assert mars.status_code == 400 and "unknown Artifact Registry location 'mars'" in mars.text
        assert "moon-central1" in mars.json()["errors"][0]["detail"]["known"]
    assert fake.count(location="mars") == 0
    # Listed once: an unlisted name refreshes only a list older than ten minutes.
    assert fake.count(kind="metadata", path="/locations$") == 1
    fallback = proxy(fake.upstream, cache__dir=str(tmp_path / "other"))  # API not asked
    answer = httpx.get(
        f"{fallback.url}/v2/moon-central1-docker.pkg.dev/proj/repo/app/manifests/v1", headers=ACCEPT
    )
    assert answer.status_code == 400 and fake.count(location="moon-central1", kind="manifest") == 1


def test_an_unavailable_location_answers_with_retry_after(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    fake.add_fault(Fault(location="europe-west1", kind="manifest", status=503, retry_after=7))
    running = proxy(fake.upstream, transport__retries="0")
    answer = httpx.get(
        f"{running.url}/v2/europe-west1-docker.pkg.dev/p/r/i/manifests/v1", headers=ACCEPT
    )
    assert answer.status_code == 503 and answer.headers["retry-after"] == "7"
    error = answer.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE" and error["message"].endswith("retry after 7 s")


# ---------------------------------------------------------------- refresh, stepped clock


@pytest.fixture
async def checks_of(tmp_path: Path) -> AsyncIterator[tuple[FakeGAR, RepositoryChecks, ManualClock]]:
    fake = FakeGAR(auth="none", locations=["us", "europe"])
    clock = ManualClock()
    index = await CacheIndex.open(tmp_path / "index.sqlite3", clock)
    with fake.serve() as url:
        async with httpx.AsyncClient(timeout=10) as http:
            api = RepositoryApi(url, GoogleApi(http, None))
            yield fake, RepositoryChecks(api, index, clock), clock
    await index.close()


async def test_the_location_list_is_remembered_and_refreshed(
    checks_of: tuple[FakeGAR, RepositoryChecks, ManualClock],
) -> None:
    fake, checks, clock = checks_of
    with pytest.raises(RegistryError, match="unknown Artifact Registry location 'asia'"):
        await checks.require_location("proj", "asia")
    assert fake.count(kind="metadata") == 1  # the unlisted name did not refresh a new list
    fake.locations.add("asia")  # Google adds a region
    clock.advance(601)
    await checks.require_location("proj", "asia")
    assert fake.count(kind="metadata") == 2
    await checks.require_location("proj", "us")
    again = RepositoryChecks(checks.api, checks.index, clock)  # a restart: the index remembers
    await again.require_location("proj", "asia")
    assert fake.count(kind="metadata") == 2
    fake.locations.discard("europe")
    clock.advance(24 * 3600)
    with pytest.raises(RegistryError):
        await again.require_location("proj", "europe")
    assert fake.count(kind="metadata") == 3


def test_a_repository_found_in_a_new_region_is_served_from_it(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"a": b"lunar"})])
    fake.add_repository("moon-central1", "proj", "lunar")
    fake.put_image("moon-central1", "proj/lunar/app", "v1", image)
    running = proxy(fake.upstream, routing__resolve_locations="true", **checked(fake))
    answer = httpx.get(f"{running.url}/v2/proj/lunar/app/manifests/v1", headers=ACCEPT)
    assert answer.content == image.manifest
    assert fake.count("GET", "manifest", location="moon-central1") == 1
