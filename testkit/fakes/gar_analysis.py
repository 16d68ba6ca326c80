"""A fake Container Analysis, Artifact Registry image listing and Cloud Storage.

The REST surfaces the GAR-intelligence modules (``proxy/gar/cleanup.py``,
``vulnerabilities.py``, ``sbom.py``) read, with data each test writes:

- ``GET /v1/projects/P/occurrences?filter=resourceUrl="..." AND kind="..."`` (Grafeas v1),
  paged with ``pageSize``/``pageToken``; DISCOVERY answers can follow a script, one
  state per query, to play a scan in progress;
- ``GET /v1/projects/P/locations/L/repositories/R/dockerImages``, paged;
- ``GET /storage/BUCKET/OBJECT`` for SBOM documents (``gs://BUCKET/OBJECT``).

It is its own ASGI app; ``in_front_of(fake_gar)`` answers these paths and hands every
other request (the registry, repositories with their ``cleanupPolicies``) to the fake
GAR, so one URL serves both::

    analysis = FakeAnalysis(access_tokens={"ya29.test"})
    analysis.add_vulnerability(url, "CVE-2024-1", "CRITICAL", "openssl", "3.0.1", "3.0.7", 9.8)
    with serve_in_thread(analysis.in_front_of(fake)) as base:
        ...
    assert analysis.count("VULNERABILITY") == 1
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from testkit.fakes.gar_iam import CLOUD_PLATFORM
from testkit.fakes.gar_shapes import google_error, service_disabled

ANALYSIS = "containeranalysis.googleapis.com"

_FILTER = re.compile(r'resourceUrl="(?P<url>[^"]+)" AND kind="(?P<kind>\w+)"')
_OWN_PATHS = re.compile(r"/v1/projects/[^/]+/(occurrences|locations/.+/dockerImages)|/storage/.*")


def _error(status: int, message: str, code: str) -> Response:
    body = {"error": {"code": status, "message": message, "status": code}}
    return Response(json.dumps(body), status, media_type="application/json")


def _page(request: Request, field: str, items: list[dict[str, Any]]) -> Response:
    token = request.query_params.get("pageToken") or "0"
    size = int(request.query_params.get("pageSize") or "100")
    start = int(token) if token.isdigit() else 0
    stop = start + max(size, 1)
    body: dict[str, Any] = {}
    if items[start:stop]:
        body[field] = items[start:stop]  # Google APIs omit empty lists
    if stop < len(items):
        body["nextPageToken"] = str(stop)
    return Response(json.dumps(body), media_type="application/json")


class FakeAnalysis:
    def __init__(
        self,
        access_tokens: set[str] | None = None,
        scopes: Callable[[str], Iterable[str] | None] | None = None,
    ) -> None:
        self.access_tokens = access_tokens  # None: no auth
        # A token's OAuth scopes (None: unknown, taken as cloud-platform), so the fake
        # refuses what Google refuses (docs/GAR.md R3, R6).
        self.scopes = scopes
        self.disabled = False  # Container Analysis API not enabled (R2)
        self.images: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.occurrences: list[dict[str, Any]] = []
        self.documents: dict[str, dict[str, Any]] = {}
        self.queries: Counter[str] = Counter()  # occurrence queries per kind
        self._discovery_script: dict[str, tuple[list[str | None], str]] = {}
        self._lock = threading.Lock()
        self.app = Router(
            [
                Route("/v1/projects/{project}/occurrences", self._occurrences),
                Route(
                    "/v1/projects/{project}/locations/{location}/repositories/{repo}/dockerImages",
                    self._docker_images,
                ),
                Route("/storage/{bucket}/{path:path}", self._storage),
            ]
        )

    # ------------------------------------------------------------ data written by tests

    def add_docker_image(
        self,
        location: str,
        project: str,
        repo: str,
        image: str,
        digest: str,
        tags: list[str],
        upload_time: str,
        update_time: str | None = None,
    ) -> dict[str, Any]:
        parent = f"projects/{project}/locations/{location}/repositories/{repo}"
        body = {
            "name": f"{parent}/dockerImages/{quote(image, safe='')}@{digest}",
            "uri": f"{location}-docker.pkg.dev/{project.replace(':', '/')}/{repo}/{image}@{digest}",
            "tags": tags,
            "imageSizeBytes": "2048",
            "uploadTime": upload_time,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "buildTime": upload_time,
            "updateTime": update_time or upload_time,
        }
        with self._lock:
            self.images.setdefault((project, location, repo), []).append(body)
        return body

    def _add(self, resource_url: str, kind: str, **payload: Any) -> dict[str, Any]:
        with self._lock:
            number = len(self.occurrences) + 1
            body = {
                "name": f"projects/{_project(resource_url)}/occurrences/{number}",
                "resourceUri": resource_url,
                "kind": kind,
                "createTime": "2026-06-01T00:00:00Z",
                "updateTime": f"2026-06-01T00:00:{number % 60:02d}Z",
                **payload,
            }
            self.occurrences.append(body)
        return body

    def set_discovery(self, resource_url: str, *states: str | None, error: str = "") -> None:
        """The DISCOVERY state, or a script of states read one per query (last one stays);
        None is "no DISCOVERY occurrence"."""
        with self._lock:
            self._discovery_script[resource_url] = (list(states), error)

    def add_vulnerability(
        self,
        resource_url: str,
        cve: str,
        severity: str,
        package: str,
        installed: str,
        fixed: str | None,
        cvss: float | None = None,
    ) -> dict[str, Any]:
        fixed_version = {"kind": "MAXIMUM"} if fixed is None else {"name": fixed, "kind": "NORMAL"}
        vulnerability: dict[str, Any] = {
            "severity": severity,
            "effectiveSeverity": severity,
            "shortDescription": cve,
            "fixAvailable": fixed is not None,
            "packageIssue": [
                {
                    "affectedCpeUri": "cpe:/o:debian:debian_linux:12",
                    "affectedPackage": package,
                    "affectedVersion": {"name": installed, "kind": "NORMAL", "fullName": installed},
                    "fixedVersion": fixed_version,
                    "fixAvailable": fixed is not None,
                    "packageType": "OS",
                    "effectiveSeverity": severity,
                }
            ],
        }
        if cvss is not None:
            vulnerability["cvssScore"] = cvss
        note = f"projects/goog-vulnz/notes/{cve}"
        return self._add(resource_url, "VULNERABILITY", noteName=note, vulnerability=vulnerability)

    def add_sbom(self, resource_url: str, bucket: str, path: str, document: dict[str, Any]) -> None:
        with self._lock:
            self.documents[f"{bucket}/{path}"] = document
        predicate = {
            "referrerId": "https://artifactregistry.googleapis.com",
            "location": f"gs://{bucket}/{path}",
            "mimeType": "application/spdx+json",
            "digest": {"sha256": "0" * 64},
        }
        payload = {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://bcid.corp.google.com/reference/v0.1",
            "subject": [{"name": resource_url, "digest": {"sha256": resource_url[-64:]}}],
            "predicate": predicate,
        }
        self._add(
            resource_url,
            "SBOM_REFERENCE",
            noteName="projects/goog-analysis/notes/sbom",
            sbomReference={"payloadType": "application/vnd.in-toto+json", "payload": payload},
        )

    def count(self, kind: str) -> int:
        with self._lock:
            return self.queries[kind]

    # ------------------------------------------------------------ serving

    def in_front_of(self, fallback: ASGIApp) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and _OWN_PATHS.fullmatch(scope["path"]):
                await self.app(scope, receive, send)
            else:
                await fallback(scope, receive, send)

        return app

    def _denied(self, request: Request, *, analysis: bool = False) -> Response | None:
        """401 without a token we know; for Container Analysis (``analysis``) also 403
        when the API is off (R2) or the token lacks ``cloud-platform``, the only scope
        its discovery document lists (R6: read-only does not do)."""
        project = request.path_params.get("project", "")
        if analysis and self.disabled:
            return service_disabled("Container Analysis API", ANALYSIS, project)
        if self.access_tokens is None:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if token not in self.access_tokens:
            return _error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        granted = self.scopes(token) if self.scopes else None
        if analysis and granted is not None and CLOUD_PLATFORM not in set(granted):
            return google_error(
                403,
                "Request had insufficient authentication scopes.",
                "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                metadata={"service": ANALYSIS, "method": "grafeas.v1.Grafeas.ListOccurrences"},
            )
        return None

    async def _occurrences(self, request: Request) -> Response:
        denied = self._denied(request, analysis=True)
        if denied is not None:
            return denied
        wanted = _FILTER.fullmatch(request.query_params.get("filter", ""))
        if wanted is None:
            return _error(400, "filter must be resourceUrl=... AND kind=...", "INVALID_ARGUMENT")
        url, kind = wanted["url"], wanted["kind"]
        project = request.path_params["project"]
        with self._lock:
            self.queries[kind] += 1
            if kind == "DISCOVERY" and url in self._discovery_script:
                found = self._scripted_discovery(url)
            else:
                found = [
                    o
                    for o in self.occurrences
                    if o["resourceUri"] == url and o["kind"] == kind and _project(url) == project
                ]
        return _page(request, "occurrences", found)

    def _scripted_discovery(self, url: str) -> list[dict[str, Any]]:
        script, error = self._discovery_script[url]
        state = script.pop(0) if len(script) > 1 else script[0]
        if state is None:
            return []
        discovery: dict[str, Any] = {"analysisStatus": state, "continuousAnalysis": "ACTIVE"}
        if state in ("FINISHED_FAILED", "FINISHED_UNSUPPORTED") and error:
            discovery["analysisStatusError"] = {"code": 13, "message": error}
        return [
            {
                "name": f"projects/{_project(url)}/occurrences/discovery",
                "resourceUri": url,
                "kind": "DISCOVERY",
                "noteName": "projects/goog-analysis/notes/PACKAGE_VULNERABILITY",
                "updateTime": "2026-06-01T00:00:00Z",
                "discovery": discovery,
            }
        ]

    async def _docker_images(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        p = request.path_params
        with self._lock:
            # The fake GAR knows which repositories exist; here one without images is empty.
            images = list(self.images.get((p["project"], p["location"], p["repo"]), ()))
        return _page(request, "dockerImages", images)

    async def _storage(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        key = f"{request.path_params['bucket']}/{request.path_params['path']}"
        with self._lock:
            document = self.documents.get(key)
        if document is None:
            return _error(404, f"No such object: {key}", "NOT_FOUND")
        return Response(json.dumps(document), media_type="application/json")


def _project(resource_url: str) -> str:
    """``https://LOCATION-docker.pkg.dev/PROJECT/...`` -> PROJECT; a domain-scoped
    project's ``example.com/proj`` -> ``example.com:proj`` (docs/GAR.md N5)."""
    parts = resource_url.split("/")
    return f"{parts[3]}:{parts[4]}" if "." in parts[3] else parts[3]
