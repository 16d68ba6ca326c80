"""Who may do what on the fake GAR, and the REST API that only needs an access token.

``AuthMixin`` checks every ``/v2`` request (access tokens, registry tokens and their
scopes, read-only tokens), builds the Bearer challenge and sells registry tokens at
``/{location}/v2/token``; ``MetadataApiMixin`` answers the Artifact Registry REST API
under ``/v1/`` (locations, repositories, one repository) with Google's paging and errors.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from testkit.fakes.gar_model import (
    GarRepository,
    IssuedToken,
    _ApiError,
    _basic,
    _bearer,
    _google_error,
    _Route,
)


class AuthMixin:
    """Registry auth and the token endpoint; part of ``FakeGAR``."""

    # Provided by FakeGAR.
    auth: Literal["gcp", "none"]
    access_tokens: set[str]
    read_only_tokens: set[str]
    registry_token_only: bool
    strict_scopes: bool
    registry_token_ttl: float
    issued_tokens: dict[str, IssuedToken]
    _lock: threading.RLock

    @staticmethod
    def _actions(method: str) -> frozenset[str]:
        return frozenset({"pull"} if method in ("GET", "HEAD") else {"pull", "push"})

    def _challenge(self, request: Request, route: _Route, error: str | None = None) -> str:
        realm = f"{request.url.scheme}://{request.url.netloc}/{route.location}/v2/token"
        value = f'Bearer realm="{realm}",service="{route.location}-docker.pkg.dev"'
        if route.name:
            actions = ",".join(sorted(self._actions(request.method)))
            value += f',scope="repository:{route.name}:{actions}"'
        return value + (f',error="{error}"' if error else "")

    def _authorize(self, request: Request, route: _Route) -> Response | None:
        """None when the request may go on, else the 401/403 to answer with."""
        if self.auth == "none" or route.kind == "token":
            return None
        token = _bearer(request.headers.get("authorization")) or ""
        with self._lock:
            is_access = token in self.access_tokens
            issued = self.issued_tokens.get(token)
        if route.kind == "metadata":
            if is_access:
                return None
            return _google_error(401, "Request had invalid authentication credentials.")
        writes = "push" in self._actions(request.method)
        if is_access and not self.registry_token_only:
            return self._denied(route) if writes and token in self.read_only_tokens else None
        if issued is None or issued.location != route.location:
            unknown = token and not is_access  # a raw access token just needs the dance
            return self._unauthorized(request, route, "invalid_token" if unknown else None)
        if issued.expires_at < time.monotonic():
            return self._unauthorized(request, route, "invalid_token")
        if writes and issued.access_token in self.read_only_tokens:
            return self._denied(route)
        granted = issued.scopes.get(route.name, frozenset())
        if route.name and self.strict_scopes and not self._actions(request.method) <= granted:
            return self._unauthorized(request, route, "insufficient_scope")
        return None

    def _unauthorized(self, request: Request, route: _Route, error: str | None) -> Response:
        challenge = self._challenge(request, route, error)
        message = error or "authentication required"
        return _ApiError(401, "UNAUTHORIZED", message, {"WWW-Authenticate": challenge}).response()

    def _denied(self, route: _Route) -> Response:
        return _ApiError(403, "DENIED", f"permission denied on {route.name}").response()

    async def _token(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        access_token = ""
        if self.auth == "gcp":
            creds = _basic(request.headers.get("authorization"))
            with self._lock:
                known = creds is not None and creds[1] in self.access_tokens
            if creds is None or creds[0] != "oauth2accesstoken" or not known:
                realm = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
                raise _ApiError(
                    401,
                    "UNAUTHORIZED",
                    "invalid credentials",
                    {"WWW-Authenticate": f'Basic realm="{realm}"'},
                )
            access_token = creds[1]
        scopes: dict[str, frozenset[str]] = {}
        for scope in request.query_params.getlist("scope"):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = {"pull", "push"} if actions == "*" else set(actions.split(","))
            if access_token in self.read_only_tokens:
                wanted.discard("push")
            if kind == "repository" and name:
                scopes[name] = frozenset(wanted & {"pull", "push"}) | scopes.get(name, frozenset())
        token = "regtok-" + secrets.token_urlsafe(24)
        issued = IssuedToken(
            token,
            access_token,
            route.location,
            request.query_params.get("service"),
            scopes,
            time.monotonic() + self.registry_token_ttl,
        )
        with self._lock:
            self.issued_tokens[token] = issued
        ttl = int(self.registry_token_ttl)
        body = {"token": token, "access_token": token, "expires_in": ttl}
        return Response(json.dumps(body), 200, media_type="application/json")


class MetadataApiMixin:
    """The Artifact Registry REST metadata API; part of ``FakeGAR``."""

    # Provided by FakeGAR.
    locations: set[str]
    repositories: dict[tuple[str, str, str], GarRepository]
    _lock: threading.RLock

    async def _metadata(self, request: Request, route: _Route) -> Response:
        if request.method != "GET":
            return _google_error(404, "Method not found.")
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
            return _google_error(404, "Requested entity was not found.")
        return Response(json.dumps(repository.resource()), media_type="application/json")

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
