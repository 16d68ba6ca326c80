"""The Artifact Registry REST API on the fake GAR: locations, repositories, one repository.

``MetadataApiMixin`` answers ``/v1/projects/P/locations[/L/repositories[/R]]`` with
Google's paging (an empty list left out, ``nextPageToken``) and refuses as Google does,
in its error shape (docs/GAR.md R1): an API not enabled (R2), a token without a scope
the method takes (R3, R6), IAM before existence (R4: 403 whether or not the repository
exists, for a principal that may not see it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from testkit.fakes.gar_iam import (
    GET,
    LIST,
    LOCATIONS,
    READ,
    Principal,
    resource_name,
    rest_denied_message,
    scope_allows,
)
from testkit.fakes.gar_model import GarRepository, _bearer, _Route
from testkit.fakes.gar_shapes import google_error, service_disabled


class MetadataApiMixin:
    """The Artifact Registry REST metadata API; part of ``FakeGAR``."""

    # Provided by FakeGAR and AuthMixin.
    locations: set[str]
    repositories: dict[tuple[str, str, str], GarRepository]
    disabled_apis: set[str]
    _lock: threading.RLock
    principal: Callable[[str], Principal]
    scopes_of: Callable[[str], tuple[str, ...] | None]

    async def _metadata(self, request: Request, route: _Route) -> Response:
        if request.method != "GET":
            return google_error(404, "Method not found.")
        refused = self._refused(request, route)
        if refused is not None:
            return refused
        project = route.project
        with self._lock:
            if route.location is None:
                items: list[dict[str, Any]] = [
                    {
                        "name": f"projects/{project}/locations/{loc}",
                        "locationId": loc,
                        "displayName": loc,
                    }
                    for loc in sorted(self.locations)
                ]
                return self._page(request, "locations", items)
            if route.repository is None:
                items = [
                    r.resource()
                    for key, r in sorted(self.repositories.items())
                    if key[:2] == (route.location, project)
                ]
                return self._page(request, "repositories", items)
            repository = self.repositories.get((route.location, project, route.repository))
        if repository is None:
            return google_error(404, "Requested entity was not found.")
        return Response(json.dumps(repository.resource()), media_type="application/json")

    def _refused(self, request: Request, route: _Route) -> Response | None:
        """An API not enabled (GAR.md R2), a token without a scope the method takes
        (R3, R6), or IAM before existence (R4), in Google's error shape (R1)."""
        project = route.project
        service = "artifactregistry.googleapis.com"
        if service in self.disabled_apis:
            return service_disabled("Artifact Registry API", service, project)
        token = _bearer(request.headers.get("authorization")) or ""
        if not scope_allows(self.scopes_of(token), write=False):
            return google_error(
                403,
                "Request had insufficient authentication scopes.",
                "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                metadata={"service": service, "method": "google.devtools.artifactregistry.v1"},
            )
        principal = self.principal(token)
        if route.location is None or route.repository is None:
            if principal.project_wide_on(project):
                return None
            permission = LOCATIONS if route.location is None else LIST
            return _iam_denied(permission, f"projects/{project}")
        key = (route.location, project, route.repository)
        if principal.may(key, READ):
            return None
        return _iam_denied(GET, resource_name(key))

    @staticmethod
    def _page(request: Request, field_name: str, items: list[dict[str, Any]]) -> Response:
        token = request.query_params.get("pageToken") or "0"
        size = request.query_params.get("pageSize") or "1000"
        start = int(token) if token.isdigit() else 0
        stop = start + max(int(size) if size.isdigit() else 1000, 1)
        body: dict[str, Any] = {}
        if items[start:stop]:
            body[field_name] = items[start:stop]  # Google APIs omit empty lists
        if stop < len(items):
            body["nextPageToken"] = str(stop)
        return Response(json.dumps(body), media_type="application/json")


def _iam_denied(permission: str, resource: str) -> Response:
    """GAR.md R4: the message as gcloud shows it; the ErrorInfo as IAM's own APIs send it
    (whether Artifact Registry adds one is unknown; the proxy reads either)."""
    return google_error(
        403,
        rest_denied_message(permission, resource),
        "IAM_PERMISSION_DENIED",
        domain="iam.googleapis.com",
        metadata={"permission": permission},
    )
