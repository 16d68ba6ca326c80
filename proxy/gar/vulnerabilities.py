"""Container Analysis (Grafeas v1): scan status, vulnerability report, waiting for a scan.

Occurrences are listed per image with the filter
``resourceUrl="https://LOCATION-docker.pkg.dev/PROJECT/REPO/IMAGE@sha256:..." AND kind="..."``;
the URL names a digest, so a tag must be resolved before anything here is asked.

- the scan status comes from the DISCOVERY occurrence's ``discovery.analysisStatus``;
- a report reads the VULNERABILITY occurrences: one finding per ``packageIssue`` (a CVE
  can hit several packages), its severity the package issue's ``effectiveSeverity`` when
  set, else the occurrence's ``effectiveSeverity``, else its ``severity``.

>>> from proxy.oci.digest import Digest
>>> image = Resource("europe-west1", "proj", "repo", "team/app", Digest("sha256", "ab" * 32))
>>> image.url
'https://europe-west1-docker.pkg.dev/proj/repo/team/app@sha256:abab...abab'
>>> print(occurrence_filter(image, "DISCOVERY"))
resourceUrl="https://europe-west1-docker.pkg.dev/proj/repo/team/app@sha256:ab...ab" AND kind=...
>>> occurrence_filter(image, "DISCOVERY").endswith(' AND kind="DISCOVERY"')
True
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.gar.jsonapi import JsonGetter, pages
from proxy.oci.digest import Digest

CONTAINER_ANALYSIS = "https://containeranalysis.googleapis.com"
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "MINIMAL", "SEVERITY_UNSPECIFIED")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
# Backoff between status reads while a scan runs: GAR scans take tens of seconds to a few
# minutes, so polling faster than every 5 s buys nothing and 30 s bounds the added wait.
FIRST_INTERVAL = 5.0
MAX_INTERVAL = 30.0

State = Literal["not_scanned", "pending", "scanning", "finished", "failed", "unsupported"]
_STATES: dict[str, State] = {
    "PENDING": "pending",
    "SCANNING": "scanning",
    "FINISHED_SUCCESS": "finished",
    "COMPLETE": "finished",  # an alias of FINISHED_SUCCESS in the enum
    "FINISHED_FAILED": "failed",
    "FINISHED_UNSUPPORTED": "unsupported",
}


class ScanFailed(Exception):
    """The scan finished without a result; the message is the analysis error."""


class ScanUnsupported(ScanFailed):
    """Container Analysis does not scan this kind of image; waiting cannot help."""


class ScanTimeout(Exception):
    """The deadline passed before the scan finished."""


@dataclass(frozen=True, slots=True)
class Resource:
    """An image in GAR named by digest, the way Container Analysis names it."""

    location: str
    project: str  # as the REST APIs write it: example.com:proj for a domain-scoped one
    repository: str
    image: str
    digest: Digest

    @property
    def url(self) -> str:
        # Image names write a domain-scoped project example.com/proj (docs/GAR.md N5).
        path = f"{self.project.replace(':', '/')}/{self.repository}/{self.image}"
        return f"https://{self.location}-docker.pkg.dev/{path}@{self.digest}"


def occurrence_filter(resource: Resource, kind: str) -> str:
    return f'resourceUrl="{resource.url}" AND kind="{kind}"'


@dataclass(frozen=True, slots=True)
class ScanStatus:
    state: State
    reason: str | None = None  # why a scan failed or is unsupported
    updated: str | None = None  # the DISCOVERY occurrence's updateTime

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "unsupported")


@dataclass(frozen=True, slots=True)
class Finding:
    cve: str
    severity: str
    package: str
    installed_version: str | None
    fixed_version: str | None  # None: no fix yet
    cvss_score: float | None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    resource_url: str
    findings: tuple[Finding, ...]  # worst first
    counts: Mapping[str, int] = field(default_factory=dict)  # every severity, 0 included

    def at_or_above(self, severity: str) -> list[Finding]:
        limit = _RANK[severity]
        return [f for f in self.findings if _RANK[f.severity] <= limit]


def _status_reason(discovery: Mapping[str, Any]) -> str | None:
    """``analysisStatusError`` and ``analysisError[]`` are google.rpc.Status objects."""
    errors = [discovery.get("analysisStatusError") or {}, *(discovery.get("analysisError") or ())]
    messages = [str(e.get("message")) for e in errors if e.get("message")]
    return "; ".join(messages) or None


def scan_status(discoveries: list[dict[str, Any]]) -> ScanStatus:
    """The status told by the newest DISCOVERY occurrence (none: not scanned)."""
    if not discoveries:
        return ScanStatus("not_scanned")
    newest = max(discoveries, key=lambda o: str(o.get("updateTime") or o.get("createTime") or ""))
    discovery = newest.get("discovery") or {}
    state = _STATES.get(str(discovery.get("analysisStatus")), "not_scanned")
    reason = _status_reason(discovery) if state in ("failed", "unsupported") else None
    if state == "failed" and reason is None:
        reason = "the scan failed without saying why"
    return ScanStatus(state, reason, newest.get("updateTime"))


def _version(version: Mapping[str, Any] | None) -> str | None:
    """A Grafeas Version as text; kind MAXIMUM means "no fixed version yet"."""
    if not version or version.get("kind") == "MAXIMUM":
        return None
    if version.get("fullName"):
        return str(version["fullName"])
    name = str(version.get("name") or "")
    if not name:
        return None
    text = f"{version['epoch']}:{name}" if version.get("epoch") else name
    return f"{text}-{version['revision']}" if version.get("revision") else text


def findings_of(occurrence: Mapping[str, Any]) -> list[Finding]:
    vulnerability = occurrence.get("vulnerability") or {}
    cve = str(occurrence.get("noteName") or "").rsplit("/", 1)[-1] or "unknown"
    overall = vulnerability.get("effectiveSeverity") or vulnerability.get("severity")
    score = vulnerability.get("cvssScore")
    found: list[Finding] = []
    for issue in vulnerability.get("packageIssue") or [{}]:
        severity = str(issue.get("effectiveSeverity") or overall or "SEVERITY_UNSPECIFIED")
        fixed = _version(issue.get("fixedVersion"))
        if issue.get("fixAvailable") is False:
            fixed = None
        found.append(
            Finding(
                cve=cve,
                severity=severity if severity in _RANK else "SEVERITY_UNSPECIFIED",
                package=str(issue.get("affectedPackage") or ""),
                installed_version=_version(issue.get("affectedVersion")),
                fixed_version=fixed,
                cvss_score=float(score) if score is not None else None,
                description=str(vulnerability.get("shortDescription") or ""),
            )
        )
    return found


def build_report(resource_url: str, occurrences: list[dict[str, Any]]) -> Report:
    findings = [f for o in occurrences for f in findings_of(o)]
    findings.sort(key=lambda f: (_RANK[f.severity], -(f.cvss_score or 0.0), f.cve, f.package))
    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return Report(resource_url, tuple(findings), counts)


class VulnerabilityClient:
    """Reads occurrences of one image through the JSON seam."""

    def __init__(self, api: JsonGetter, base_url: str = CONTAINER_ANALYSIS, page_size: int = 500):
        self._api = api
        self._base = base_url.rstrip("/")
        self._page_size = page_size

    async def occurrences(self, resource: Resource, kind: str) -> list[dict[str, Any]]:
        url = f"{self._base}/v1/projects/{resource.project}/occurrences"
        params = {"filter": occurrence_filter(resource, kind), "pageSize": str(self._page_size)}
        found: list[dict[str, Any]] = []
        async for page in pages(self._api, url, params, "occurrences"):
            found += page
        return found

    async def scan_status(self, resource: Resource) -> ScanStatus:
        return scan_status(await self.occurrences(resource, "DISCOVERY"))

    async def report(self, resource: Resource) -> Report:
        return build_report(resource.url, await self.occurrences(resource, "VULNERABILITY"))


async def wait_for_scan(
    client: VulnerabilityClient,
    resource: Resource,
    *,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> Report:
    """The report once the scan has finished; ``deadline`` is a reading of ``clock``.

    Reads the status, then waits 5 s, 10 s, 20 s, 30 s, 30 s... between reads; the last
    wait is cut short so the status is read once more at the deadline itself.
    """
    interval = FIRST_INTERVAL
    while True:
        status = await client.scan_status(resource)
        if status.state == "finished":
            return await client.report(resource)
        if status.state == "unsupported":
            raise ScanUnsupported(
                f"{resource.url} cannot be scanned: {status.reason or 'unsupported'}"
            )
        if status.state == "failed":
            raise ScanFailed(f"the scan of {resource.url} failed: {status.reason}")
        remaining = deadline - clock()
        if remaining <= 0:
            raise ScanTimeout(
                f"the scan of {resource.url} was still {status.state} at the deadline"
            )
        await sleep(min(interval, remaining))
        interval = min(interval * 2, MAX_INTERVAL)
