"""The GAR-intelligence modules against the fake GAR and fake Container Analysis on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from proxy.gar.cleanup import NO_POLICY, RepositoryNotFound, preview
from proxy.gar.sbom import fetch_sbom
from proxy.gar.vulnerabilities import (
    Resource,
    ScanFailed,
    VulnerabilityClient,
    wait_for_scan,
)
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_analysis import FakeAnalysis
from testkit.servers import serve_in_thread
from tests.gar.test_sbom import SPDX

TOKEN = "ya29.intel-test"
DIGEST = "sha256:" + "e" * 64
IMAGE = Resource("europe-west1", "proj", "repo", "team/app", Digest.parse(DIGEST))


class HttpJson:
    """The seam over a plain httpx client; the proxy wires its pooled, authenticated one."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http, self.token = http, token

    async def get_json(
        self, url: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        answer = await self.http.get(
            url, params=params, headers={"Authorization": f"Bearer {self.token}"}
        )
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body


@pytest.fixture
def fakes() -> Iterator[tuple[FakeGAR, FakeAnalysis, str]]:
    gar = FakeGAR(access_tokens={TOKEN})
    analysis = FakeAnalysis(access_tokens={TOKEN})
    with serve_in_thread(analysis.in_front_of(gar)) as url:
        yield gar, analysis, url


@pytest.fixture
async def api() -> AsyncIterator[HttpJson]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield HttpJson(http, TOKEN)


async def test_cleanup_preview_reads_policies_and_every_page_of_images(
    fakes: tuple[FakeGAR, FakeAnalysis, str], api: HttpJson
) -> None:
    gar, analysis, url = fakes
    gar.add_repository(
        "us",
        "proj",
        "repo",
        cleanup_policies={
            "old-untagged": {
                "id": "old-untagged",
                "action": "DELETE",
                "condition": {"tagState": "UNTAGGED", "olderThan": "2592000s"},
            },
            "keep-2": {"id": "keep-2", "action": "KEEP", "mostRecentVersions": {"keepCount": 2}},
        },
    )
    for day, tags in ((1, []), (2, []), (3, ["v3"]), (4, []), (5, [])):
        analysis.add_docker_image(
            "us",
            "proj",
            "repo",
            "team/app",
            f"sha256:{day}" + "0" * 63,
            tags,
            f"2026-01-0{day}T00:00:00Z",
        )
    now = datetime(2026, 6, 1, tzinfo=UTC)
    found = await preview(api, url, "proj", "us", "repo", now)
    verdicts = found.verdicts
    assert found.dry_run is False  # the fake leaves cleanupPolicyDryRun out (GAR.md R7)
    assert [(v.version.digest[7], v.action, v.decided_by) for v in verdicts] == [
        ("1", "delete", "old-untagged"),
        ("2", "delete", "old-untagged"),
        ("3", "keep", NO_POLICY),
        ("4", "keep", "keep-2"),
        ("5", "keep", "keep-2"),
    ]
    assert all(v.version.package == "team/app" for v in verdicts)
    with pytest.raises(RepositoryNotFound):
        await preview(api, url, "proj", "us", "absent", now)


async def test_wait_for_scan_then_a_report_over_three_pages(
    fakes: tuple[FakeGAR, FakeAnalysis, str], api: HttpJson
) -> None:
    _, analysis, url = fakes
    analysis.set_discovery(IMAGE.url, None, "SCANNING", "SCANNING", "FINISHED_SUCCESS")
    for n, severity in enumerate(["LOW", "CRITICAL", "HIGH", "MEDIUM", "CRITICAL"]):
        fixed = None if n == 2 else f"1.{n}.1"
        analysis.add_vulnerability(
            IMAGE.url, f"CVE-2026-{n}", severity, f"pkg{n}", f"1.{n}", fixed, n + 5.0
        )
    analysis.add_vulnerability(
        IMAGE.url.replace("e" * 64, "f" * 64), "CVE-OTHER", "CRITICAL", "x", "1", None
    )
    clock, sleeps = [0.0], []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    client = VulnerabilityClient(api, url, page_size=2)
    report = await wait_for_scan(client, IMAGE, deadline=120, clock=lambda: clock[0], sleep=sleep)
    assert sleeps == [5, 10, 20]
    assert analysis.count("DISCOVERY") == 4
    assert analysis.count("VULNERABILITY") == 3  # three pages of two
    assert [f.cve for f in report.findings] == [
        "CVE-2026-4",
        "CVE-2026-1",
        "CVE-2026-2",
        "CVE-2026-3",
        "CVE-2026-0",
    ]
    assert report.counts["CRITICAL"] == 2
    assert report.findings[2].fixed_version is None


async def test_a_failed_scan_reports_its_reason(
    fakes: tuple[FakeGAR, FakeAnalysis, str], api: HttpJson
) -> None:
    _, analysis, url = fakes
    analysis.set_discovery(IMAGE.url, "FINISHED_FAILED", error="could not unpack layer 3")
    with pytest.raises(ScanFailed, match="could not unpack layer 3"):
        await wait_for_scan(
            VulnerabilityClient(api, url), IMAGE, deadline=60, clock=lambda: 0.0, sleep=_no_sleep
        )


async def _no_sleep(seconds: float) -> None:
    raise AssertionError("a finished scan is not waited for")


async def test_the_sbom_is_fetched_from_storage(
    fakes: tuple[FakeGAR, FakeAnalysis, str], api: HttpJson
) -> None:
    _, analysis, url = fakes
    client = VulnerabilityClient(api, url)
    assert await fetch_sbom(client, api, IMAGE, storage=url + "/storage") is None
    analysis.add_sbom(IMAGE.url, "proj-sboms", f"team/app/{DIGEST}/sbom.spdx.json", SPDX)
    found = await fetch_sbom(client, api, IMAGE, storage=url + "/storage")
    assert found is not None
    reference, sbom = found
    assert reference.location == f"gs://proj-sboms/team/app/{DIGEST}/sbom.spdx.json"
    assert [p.name for p in sbom.packages] == ["openssl", "requests", "base-files"]


async def test_the_fake_analysis_wants_a_token(fakes: tuple[FakeGAR, FakeAnalysis, str]) -> None:
    _, _, url = fakes
    async with httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(httpx.HTTPStatusError) as raised:
            await VulnerabilityClient(HttpJson(http, "wrong"), url).scan_status(IMAGE)
    assert raised.value.response.status_code == 401
