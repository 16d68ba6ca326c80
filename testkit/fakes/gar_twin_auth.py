"""The GAR twin's tokens: the ``/v2/`` challenge, ``/v2/token`` and Bearer checks.

Evidence (docs/GAR.md A1-A6): the challenge is ``Bearer realm=".../v2/token"`` without
``service`` (a repository's challenge once carried ``service`` and ``scope``); the token
endpoint takes Basic ``oauth2accesstoken``/``_token`` with a Google access token (and a
Bearer one: skia-buildbot ``go/gcr`` calls it with an authorized client), answers 403 to
anonymous callers and 401 to credentials it cannot check; a Google access token also
works directly on the registry (A2). Answers ``token`` and ``expires_in`` (skia-buildbot,
e2b-dev/infra ``token.go``); ``access_token`` is what other registries send (go-
containerregistry #54), and the twin can send either.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from testkit.fakes.gar_twin_wire import Grant, Knobs, Store, json_answer, oci_error, respond

BASIC_USERS = {"oauth2accesstoken", "_token"}


class TwinBase:
    """What the twin's parts share (set by ``GarTwin.__init__``)."""

    knobs: Knobs
    store: Store
    grants: dict[str, Grant]
    issued: list[str]
    download_auth: list[bool]
    downloads: dict[str, tuple[str, str]]
    ranges_asked: list[str]  # the Range header of every blob body served ("" for none)
    storage_url: str
    _valid: Callable[[str], bool]

    def new_opaque(self, size: int = 300) -> str:
        raise NotImplementedError

    async def _drain(self, request: Request) -> None:
        raise NotImplementedError


class AuthMixin(TwinBase):
    def challenge(self, request: Request, name: str | None, action: str, error: str = "") -> str:
        realm = f"http://{request.headers['host']}/v2/token"
        if self.knobs.realm_query:
            realm += "?" + self.knobs.realm_query
        parts = [f'realm="{realm}"']
        if self.knobs.challenge_service:
            parts.append(f'service="{request.headers["host"]}"')
        if self.knobs.challenge_scope and name:
            actions = "pull" if action == "pull" else "push,pull"
            parts.append(f'scope="repository:{name}:{actions}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    async def authorize(self, request: Request, send: Any, name: str | None, action: str) -> bool:
        """True when the request may go on; else the 401 (with a challenge) is sent."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        error = ""
        if scheme.lower() == "bearer":
            if self.knobs.raw_bearer and self._valid(credential):
                return True
            grant = self.grants.get(credential)
            if grant is not None:
                if grant.uses_left is not None and grant.uses_left <= 0:
                    error = "invalid_token"
                elif name is None or action in grant.scopes.get(name, set()):
                    if grant.uses_left is not None:
                        grant.uses_left -= 1
                    return True
                else:
                    error = "insufficient_scope"
        await self._drain(request)
        body = oci_error("UNAUTHORIZED", "not authenticated: No valid credential was supplied.")
        headers = [("content-type", "application/json")]
        outside_v2 = not request.url.path.startswith("/v2/")
        if self.knobs.session_challenge or not outside_v2:
            if self.knobs.basic_challenge_first:  # RFC 7235: a client picks its scheme
                headers.append(("www-authenticate", 'Basic realm="Google"'))
            headers.append(("www-authenticate", self.challenge(request, name, action, error)))
        await respond(send, 401, headers, body)
        return False

    def _caller_ok(self, request: Request) -> bool | None:
        """True: a Google principal; False: credentials it cannot check; None: none."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self._valid(credential)
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(credential).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user in BASIC_USERS and self._valid(password)

    async def token(self, request: Request, send: Any) -> None:
        caller = self._caller_ok(request)
        if caller is None:
            message = "Permission denied for anonymous callers"
            await respond(
                send, 403, [("content-type", "application/json")], oci_error("DENIED", message)
            )
            return
        if not caller:
            await respond(
                send,
                401,
                [("content-type", "application/json")],
                oci_error("UNAUTHORIZED", "authentication failed"),
            )
            return
        scopes: dict[str, set[str]] = {}
        for scope in request.query_params.getlist("scope"):
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and name:
                    wanted = set(actions.split(","))
                    scopes.setdefault(name, set()).update(wanted | ({"pull"} if wanted else set()))
        registry_token = "twin." + secrets.token_urlsafe(24)
        uses = self.knobs.token_uses or None
        self.grants[registry_token] = Grant(scopes, uses)
        await respond(
            send,
            200,
            [("content-type", "application/json")],
            json_answer(self.token_answer(registry_token)),
        )

    def token_answer(self, registry_token: str) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        if self.knobs.expires_in is not None:
            answer["expires_in"] = self.knobs.expires_in
        if self.knobs.issued_at:
            now = datetime.datetime.now(datetime.UTC)
            answer["issued_at"] = now.isoformat(timespec="seconds").replace("+00:00", "Z")
        if self.knobs.token_field in ("token", "both"):
            answer["token"] = registry_token
        if self.knobs.token_field in ("access_token", "both"):
            answer["access_token"] = registry_token
        return answer
