"""Who may do what on the fake GAR, and the REST API that only needs an access token.

``AuthMixin`` checks every ``/v2`` request (access tokens, registry tokens and their
scopes, read-only tokens), builds the Bearer challenge and sells registry tokens at
``/{location}/v2/token``; ``MetadataApiMixin`` answers the Artifact Registry REST API
under ``/v1/`` (locations, repositories, one repository) with Google's paging and errors.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from testkit.fakes.gar_iam import (
    ANY,
    READ,
    WRITE,
    Principal,
    RepositoryKey,
    Scopes,
    registry_denied,
    scope_allows,
)
from testkit.fakes.gar_model import (
    IssuedToken,
    _ApiError,
    _basic,
    _bearer,
    _Route,
)
from testkit.fakes.gar_shapes import google_error


class AuthMixin:
    """Registry auth and the token endpoint; part of ``FakeGAR``."""

    # Provided by FakeGAR.
    auth: Literal["gcp", "none"]
    access_tokens: set[str]
    read_only_tokens: set[str]
    registry_token_only: bool
    strict_scopes: bool
    registry_token_ttl: float
    repository_challenge_service: bool
    issued_tokens: dict[str, IssuedToken]
    principals: dict[str, Principal]
    json_keys: dict[str, str]
    token_scopes: Scopes | None
    _lock: threading.RLock
    _gar_key: Callable[[str, str], RepositoryKey]

    @staticmethod
    def _actions(method: str) -> frozenset[str]:
        return frozenset({"pull"} if method in ("GET", "HEAD") else {"pull", "push"})

    def principal(self, access_token: str) -> Principal:
        """Who ``access_token`` acts for: its own principal, a project-wide reader for a
        read-only token, else an owner of every project."""
        with self._lock:
            found = self.principals.get(access_token)
        if found is not None:
            return found
        if access_token in self.read_only_tokens:
            return Principal.project_wide(ANY)
        return Principal.owner()

    def scopes_of(self, access_token: str) -> tuple[str, ...] | None:
        found = self.token_scopes(access_token) if self.token_scopes else None
        return None if found is None else tuple(found)

    def _challenge(self, request: Request, route: _Route, error: str | None = None) -> str:
        """GAR's ping challenge names the realm only; challenges on a repository have
        carried ``service`` and ``scope`` too (GAR.md A1)."""
        prefix = f"/rep/{route.location}" if route.regional else f"/{route.location}"
        realm = f"{request.url.scheme}://{request.url.netloc}{prefix}/v2/token"
        value = f'Bearer realm="{realm}"'
        if route.name:
            actions = ",".join(sorted(self._actions(request.method)))
            if self.repository_challenge_service:
                value += f',service="{route.location}-docker.pkg.dev"'
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
            return google_error(401, "Request had invalid authentication credentials.")
        if is_access and not self.registry_token_only:
            return self._iam(route, token, request.method)
        if issued is None or issued.location != route.location:
            unknown = token and not is_access  # a raw access token just needs the dance
            return self._unauthorized(request, route, "invalid_token" if unknown else None)
        if issued.expires_at < time.monotonic():
            return self._unauthorized(request, route, "invalid_token")
        granted = issued.scopes.get(route.name, frozenset())
        if route.name and self.strict_scopes and not self._actions(request.method) <= granted:
            denied = self._iam(route, issued.access_token, request.method)
            if "pull" in granted and denied is not None:
                return denied  # its token endpoint left push out; it may not write
            return self._unauthorized(request, route, "insufficient_scope")
        return self._iam(route, issued.access_token, request.method)

    def _iam(self, route: _Route, access_token: str, method: str) -> Response | None:
        """IAM before existence (GAR.md A7): a principal that may not act on the
        repository is refused whether or not it exists; existence is the handler's."""
        if not route.name or route.location is None:
            return None
        key = self._gar_key(route.location, route.name)
        write = "push" in self._actions(method)
        allowed = scope_allows(self.scopes_of(access_token), write=write)
        if allowed and self.principal(access_token).may(key, WRITE if write else READ):
            return None
        return registry_denied(key, write).response()

    def _unauthorized(self, request: Request, route: _Route, error: str | None) -> Response:
        challenge = self._challenge(request, route, error)
        message = error or "authentication required"
        return _ApiError(401, "UNAUTHORIZED", message, {"WWW-Authenticate": challenge}).response()

    def _login(self, header: str | None) -> str | None:
        """The access token behind a token endpoint's Basic credentials (GAR.md A3):
        ``oauth2accesstoken`` or ``_token`` with an access token, ``_json_key`` with a
        key file, ``_json_key_base64`` with one base64-encoded; None when refused."""
        creds = _basic(header)
        if creds is None:
            return None
        user, secret = creds
        if user in ("oauth2accesstoken", "_token"):
            with self._lock:
                return secret if secret in self.access_tokens else None
        if user in ("_json_key", "_json_key_base64"):
            try:
                text = base64.b64decode(secret).decode() if user == "_json_key_base64" else secret
                key_id = str(json.loads(text).get("private_key_id"))
            except (ValueError, AttributeError, UnicodeDecodeError):
                return None
            with self._lock:
                return self.json_keys.get(key_id)
        return None

    async def _token(self, request: Request, route: _Route) -> Response:
        """The token endpoint: 403 with IAM's words to anyone who may not pull a scope's
        repository, anonymous callers included (A4, A5); 401 to credentials it cannot
        read or verify (A6)."""
        assert route.location is not None
        wanted = self._wanted_scopes(request)
        access_token = ""
        if self.auth == "gcp":
            header = request.headers.get("authorization")
            if header is None:  # anonymous: refused as an identity without permission
                key = self._gar_key(route.location, next(iter(wanted), "-/-"))
                raise registry_denied(key, write=False)
            found = self._login(header)
            if found is None:
                realm = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
                raise _ApiError(
                    401,
                    "UNAUTHORIZED",
                    "authentication failed",
                    {"WWW-Authenticate": f'Basic realm="{realm}"'},
                )
            access_token = found
        scopes = self._granted(route.location, access_token, wanted)
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

    @staticmethod
    def _wanted_scopes(request: Request) -> dict[str, set[str]]:
        wanted: dict[str, set[str]] = {}
        for scope in request.query_params.getlist("scope"):
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and name:
                    asked = {"pull", "push"} if actions == "*" else set(actions.split(","))
                    wanted.setdefault(name, set()).update(asked & {"pull", "push"})
        return wanted

    def _granted(
        self, location: str, access_token: str, wanted: dict[str, set[str]]
    ) -> dict[str, frozenset[str]]:
        """What a registry token may do: a repository the principal may not pull is a
        403 (A5); push is left out where it may only pull (A10: unknown which answer)."""
        if self.auth != "gcp":
            return {name: frozenset(actions) for name, actions in wanted.items()}
        principal = self.principal(access_token)
        full_scope = scope_allows(self.scopes_of(access_token), write=True)
        granted: dict[str, frozenset[str]] = {}
        for name, actions in wanted.items():
            key = self._gar_key(location, name)
            if not principal.may(key, READ):
                raise registry_denied(key, write=False)
            if not (full_scope and principal.may(key, WRITE)):
                actions = actions - {"push"}
            granted[name] = frozenset(actions)
        return granted
