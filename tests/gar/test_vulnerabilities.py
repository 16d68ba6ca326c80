"""Scan status, reports and wait_for_scan over a scripted Container Analysis."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from proxy.gar.vulnerabilities import (
    Resource,
    ScanFailed,
    ScanTimeout,
    ScanUnsupported,
    VulnerabilityClient,
    build_report,
    scan_status,
    wait_for_scan,
)
from proxy.oci.digest import Digest

IMAGE = Resource("us-central1", "proj", "repo", "app", Digest("sha256", "c" * 64))
URL = "https://us-central1-docker.pkg.dev/proj/repo/app@sha256:" + "c" * 64


def discovery(status: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(extra)
    if status is not None:
        body["analysisStatus"] = status
    return {
        "name": "projects/proj/occurrences/d1",
        "kind": "DISCOVERY",
        "resourceUri": URL,
        "noteName": "projects/goog-analysis/notes/PACKAGE_VULNERABILITY",
        "updateTime": "2026-06-01T10:00:00Z",
        "discovery": body,
    }


def vuln(cve: str, severity: str, score: float | None, *issues: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "severity": severity,
        "effectiveSeverity": severity,
        "shortDescription": cve,
        "packageIssue": list(issues),
    }
    if score is not None:
        body["cvssScore"] = score
    return {
        "name": f"projects/proj/occurrences/{cve}",
        "kind": "VULNERABILITY",
        "resourceUri": URL,
        "noteName": f"projects/goog-vulnz/notes/{cve}",
        "vulnerability": body,
    }


def issue(package: str, installed: str, fixed: str | None, **extra: Any) -> dict[str, Any]:
    fixed_version = {"kind": "MAXIMUM"} if fixed is None else {"name": fixed, "kind": "NORMAL"}
    return {
        "affectedPackage": package,
        "affectedVersion": {"name": installed, "kind": "NORMAL"},
        "fixedVersion": fixed_version,
        "fixAvailable": fixed is not None,
        **extra,
    }


class FakeAnalysis:
    """Occurrences per kind, served page by page; DISCOVERY answers follow a script."""

    def __init__(self, vulnerabilities: list[dict[str, Any]], statuses: list[str | None]):
        self.vulnerabilities = vulnerabilities
        self.statuses = statuses
        self.requests: list[dict[str, str]] = []

    async def get_json(
        self, url: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        assert url == "https://ca.example/v1/projects/proj/occurrences"
        query = dict(params or {})
        self.requests.append(query)
        kind = re.fullmatch(r'resourceUrl="(.+)" AND kind="(\w+)"', query["filter"])
        assert kind is not None and kind.group(1) == URL
        if kind.group(2) == "DISCOVERY":
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return {"occurrences": [] if status is None else [discovery(status)]}
        size, start = int(query["pageSize"]), int(query.get("pageToken") or 0)
        body: dict[str, Any] = {"occurrences": self.vulnerabilities[start : start + size]}
        if start + size < len(self.vulnerabilities):
            body["nextPageToken"] = str(start + size)
        return body


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


FINDINGS = [
    vuln("CVE-2024-0001", "LOW", 3.1, issue("zlib", "1.2.11", "1.2.12")),
    vuln("CVE-2024-0002", "CRITICAL", 9.8, issue("openssl", "3.0.1", "3.0.7")),
    vuln("CVE-2024-0003", "HIGH", 7.5, issue("curl", "7.88.0", None)),
    vuln("CVE-2024-0004", "MEDIUM", 5.0, issue("libxml2", "2.9.14", "2.9.15")),
    vuln("CVE-2024-0005", "CRITICAL", 10.0, issue("glibc", "2.36", "2.37")),
]


def client(api: FakeAnalysis, page_size: int = 500) -> VulnerabilityClient:
    return VulnerabilityClient(api, "https://ca.example/", page_size=page_size)


def test_no_discovery_occurrence_means_not_scanned() -> None:
    assert scan_status([]).state == "not_scanned"


@pytest.mark.parametrize(
    ("analysis", "state"),
    [
        ("PENDING", "pending"),
        ("SCANNING", "scanning"),
        ("FINISHED_SUCCESS", "finished"),
        ("COMPLETE", "finished"),
        ("ANALYSIS_STATUS_UNSPECIFIED", "not_scanned"),
        (None, "not_scanned"),
    ],
)
def test_each_discovery_state(analysis: str | None, state: str) -> None:
    status = scan_status([discovery(analysis)])
    assert status.state == state
    assert status.reason is None
    assert status.updated == "2026-06-01T10:00:00Z"


def test_a_failed_scan_carries_its_reason() -> None:
    status = scan_status(
        [
            discovery(
                "FINISHED_FAILED",
                analysisStatusError={"code": 13, "message": "layer sha256:ab could not be read"},
                analysisError=[{"code": 2, "message": "extractor crashed"}],
            )
        ]
    )
    assert status.state == "failed"
    assert status.reason == "layer sha256:ab could not be read; extractor crashed"


def test_an_unsupported_image_says_so() -> None:
    status = scan_status(
        [discovery("FINISHED_UNSUPPORTED", analysisStatusError={"message": "unsupported OS"})]
    )
    assert (status.state, status.reason) == ("unsupported", "unsupported OS")


def test_the_newest_discovery_occurrence_decides() -> None:
    old = discovery("FINISHED_FAILED") | {"updateTime": "2026-05-01T00:00:00Z"}
    assert scan_status([old, discovery("SCANNING")]).state == "scanning"


def test_a_report_counts_per_severity_and_lists_the_worst_first() -> None:
    report = build_report(URL, FINDINGS)
    assert report.counts == {
        "CRITICAL": 2,
        "HIGH": 1,
        "MEDIUM": 1,
        "LOW": 1,
        "MINIMAL": 0,
        "SEVERITY_UNSPECIFIED": 0,
    }
    assert [(f.cve, f.package) for f in report.findings[:3]] == [
        ("CVE-2024-0005", "glibc"),
        ("CVE-2024-0002", "openssl"),
        ("CVE-2024-0003", "curl"),
    ]
    openssl = report.findings[1]
    assert (openssl.installed_version, openssl.fixed_version, openssl.cvss_score) == (
        "3.0.1",
        "3.0.7",
        9.8,
    )
    assert report.findings[2].fixed_version is None  # curl: no fix yet
    assert [f.cve for f in report.at_or_above("HIGH")] == [
        "CVE-2024-0005",
        "CVE-2024-0002",
        "CVE-2024-0003",
    ]


def test_each_package_issue_is_a_finding_with_its_own_severity() -> None:
    occurrence = vuln(
        "CVE-2023-9999",
        "HIGH",
        None,
        issue("libssl3", "3.0.2", "3.0.9", effectiveSeverity="HIGH"),
        issue("openssl", "3.0.2", None, effectiveSeverity="LOW"),
    )
    occurrence["vulnerability"]["packageIssue"][0]["affectedVersion"] = {
        "epoch": 1,
        "name": "3.0.2",
        "revision": "0ubuntu1.10",
        "kind": "NORMAL",
    }
    report = build_report(URL, [occurrence])
    assert [(f.package, f.severity, f.installed_version) for f in report.findings] == [
        ("libssl3", "HIGH", "1:3.0.2-0ubuntu1.10"),
        ("openssl", "LOW", "3.0.2"),
    ]
    assert report.findings[0].cvss_score is None


async def test_a_report_split_over_three_pages_is_read_to_the_end() -> None:
    api = FakeAnalysis(FINDINGS, ["FINISHED_SUCCESS"])
    report = await client(api, page_size=2).report(IMAGE)
    assert len(report.findings) == 5
    assert [r.get("pageToken") for r in api.requests] == [None, "2", "4"]
    assert report.counts["CRITICAL"] == 2


async def test_wait_sees_scanning_twice_then_returns_the_report() -> None:
    api = FakeAnalysis(FINDINGS, ["SCANNING", "SCANNING", "FINISHED_SUCCESS"])
    clock = SteppedClock()
    report = await wait_for_scan(
        client(api), IMAGE, deadline=clock() + 300, clock=clock, sleep=clock.sleep
    )
    assert clock.sleeps == [5.0, 10.0]
    assert report.findings[0].cve == "CVE-2024-0005"
    assert report.resource_url == URL


async def test_the_backoff_doubles_to_30_seconds_and_the_deadline_raises() -> None:
    api = FakeAnalysis(FINDINGS, [None])  # never scanned
    clock = SteppedClock()
    with pytest.raises(ScanTimeout, match="not_scanned"):
        await wait_for_scan(
            client(api), IMAGE, deadline=clock() + 100, clock=clock, sleep=clock.sleep
        )
    assert clock.sleeps == [5.0, 10.0, 20.0, 30.0, 30.0, 5.0]
    assert clock.now == 1100.0  # the status was read once more at the deadline itself


async def test_a_failed_scan_stops_the_wait() -> None:
    api = FakeAnalysis(FINDINGS, ["PENDING", "FINISHED_FAILED"])
    clock = SteppedClock()
    with pytest.raises(ScanFailed, match="failed"):
        await wait_for_scan(
            client(api), IMAGE, deadline=clock() + 300, clock=clock, sleep=clock.sleep
        )
    assert clock.sleeps == [5.0]


async def test_an_unsupported_image_is_not_waited_for() -> None:
    api = FakeAnalysis(FINDINGS, ["FINISHED_UNSUPPORTED"])
    clock = SteppedClock()
    with pytest.raises(ScanUnsupported):
        await wait_for_scan(
            client(api), IMAGE, deadline=clock() + 300, clock=clock, sleep=clock.sleep
        )
    assert clock.sleeps == []
