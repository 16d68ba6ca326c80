"""``AccessControl``: the ASGI middleware that says who a client is, before any route
runs, and answers the registry way when it cannot:

- no or bad credentials where they are needed: 401 ``UNAUTHORIZED`` with
  ``WWW-Authenticate: Basic realm="gar-proxy"``, the challenge docker (``docker login``
  starts with ``GET /v2/``), podman, skopeo and containerd answer with Basic credentials;
- too many failed logins from the client's address: 429 ``TOOMANYREQUESTS`` with
  ``Retry-After`` (``proxy.auth.throttle``), no credentials checked;
- ``/_gar-proxy/*`` for anyone but an admin identity (loopback clients without client
  auth): 403 ``DENIED``;
- an HTTP/1.1 request without exactly one ``Host``: 400 (RFC 9112 section 3.2); one
  with more than one ``Authorization``: 400 (which one is meant is a guess).

What an identity may do with a repository is not decided here, from the path the
client sent, but by the routes on the repository as GAR knows it, after mirrors and
names are resolved (``proxy.auth.access.authorize``, called by
``proxy.routes.common``). With rules in force, a successful answer that no decision
let through is replaced by a 500 here: a route that forgot to ask fails closed.

``/healthz``, ``/readyz`` are open; ``/metrics`` is open when ``access.metrics_public``.
Without client auth every client is ``anonymous`` and admin paths are for loopback
clients only. The identity is in ``scope["state"]["identity"]`` for logs and routes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy import requestcontext
from proxy.auth.access import (
    ACCESS,
    DECIDED,
    IDENTITY,
    Access,
    AccessPolicy,
    denied,
    unauthorized,
)
from proxy.auth.rules import ANONYMOUS
from proxy.config import is_loopback
from proxy.config.values import client_key
from proxy.oci.errors import ErrorCode, RegistryError

__all__ = ["Access", "AccessControl", "AccessPolicy"]

log = logging.getLogger("gar_proxy.access")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ADMIN_PREFIX = "/_gar-proxy/"
# The one path whose success needs no decision beyond "who": docker's login ping.
_PING = frozenset({"/v2", "/v2/"})
_NAMED = re.compile(
    r"^/(?:v2|_gar-proxy/[a-z-]+)/(.+?)(?:/(?:manifests|blobs|tags|referrers)/.*)?$"
)


def _error(error: RegistryError, method: str) -> Response:
    requestcontext.note_error(error.code.wire, error.message)  # for the request's log line
    headers = {"Docker-Distribution-API-Version": "registry/2.0", **error.headers}
    if method == "HEAD":
        return Response(status_code=error.status, headers=headers)
    return JSONResponse(error.envelope(), error.status, headers)


def _throttled(wait: float) -> RegistryError:
    return RegistryError(
        ErrorCode.TOOMANYREQUESTS,
        f"too many failed logins from this address; retry after {math.ceil(wait)} s",
        headers={"Retry-After": str(math.ceil(wait))},
    )


def _headers(scope: Scope) -> tuple[list[bytes], int]:
    """(the Authorization values, how many Host headers)."""
    authorization, hosts = [], 0
    for key, value in scope["headers"]:
        if key == b"authorization":
            authorization.append(value)
        elif key == b"host":
            hosts += 1
    return authorization, hosts


def _asked(scope: Scope) -> str | None:
    """For a refusal's log line: the name in the path as the client sent it (nothing is
    resolved for a client not yet known)."""
    matched = _NAMED.match(scope["path"])
    return matched[1][:300] if matched else None


def _claimed_user(header: str) -> str | None:
    """The user name a Basic value claims, for the log line (never the password)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return f"({scheme.lower()[:10] or 'empty'} credentials)"
    try:
        user = base64.b64decode(value, validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return "(undecodable basic credentials)"
    return user[:64] if user.isprintable() else "(unprintable user name)"


class AccessControl:
    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self.policy.now()
        state = scope.setdefault("state", {})
        state[ACCESS], state[IDENTITY] = access, None
        refusal = await self._check(scope, access)
        if refusal is not None:
            await _error(refusal, scope["method"])(scope, receive, send)
            return
        path: str = scope["path"]
        if not access.restricted or path in _PING or path in OPEN_PATHS or path == "/metrics":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _FailClosed(scope, send))

    async def _identify(
        self, scope: Scope, access: Access, header: bytes | None
    ) -> str | RegistryError | None:
        """The identity; None: no or bad credentials; an error: throttled (no check made,
        logged once when the throttle starts, not per refused request)."""
        authenticator = access.authenticator
        if authenticator is None:
            return ANONYMOUS
        if header is None:
            return ANONYMOUS if access.settings.anonymous else None
        value = header.decode("latin-1")
        known = authenticator.remembered(value)
        if known is not None:
            return known
        address = client_key(str((scope.get("client") or ("", 0))[0]))  # a /64 for IPv6
        async with self.policy.throttle.checking(address) as check:
            if check.wait is not None:  # remembered meanwhile, or refused unchecked
                return authenticator.remembered(value) or _throttled(check.wait)
            identity = await authenticator.identify(value)
            check.failed = identity is None
        if identity is not None:
            return identity
        # Checked, and wrong: this one is a 401, the next may be a 429.
        denied(scope, _claimed_user(value), "bad credentials", repository=_asked(scope))
        if check.wait is not None:
            log.warning("access: too many failed logins from %s: its logins are refused"
                        " for %d s", address, check.wait)  # fmt: skip
        return None

    async def _check(self, scope: Scope, access: Access) -> RegistryError | None:
        path: str = scope["path"]
        credentials, hosts = _headers(scope)
        if hosts > 1 or (hosts == 0 and scope.get("http_version") == "1.1"):
            return RegistryError(
                ErrorCode.HOST_INVALID, "an HTTP/1.1 request needs exactly one Host header"
            )
        if len(credentials) > 1:
            return RegistryError(
                ErrorCode.AUTHORIZATION_INVALID, "send one Authorization header, not several"
            )
        header = credentials[0] if credentials else None
        if path == "/readyz" and access.authenticator is not None:
            await self._mark_admin(scope, access, header)  # its detail is for admins
            return None
        if path in OPEN_PATHS or (path == "/metrics" and access.settings.metrics_public):
            return None
        found = await self._identify(scope, access, header)
        if isinstance(found, RegistryError):
            return found
        scope["state"][IDENTITY] = found
        # /v2/ is docker's ping and login: it must see the challenge to send credentials.
        ping = path in _PING and access.authenticator is not None
        if found is None or (ping and found == ANONYMOUS):
            return unauthorized("bad credentials" if header is not None else None)
        if path.startswith(ADMIN_PREFIX) and not self._admin(scope, access, found):
            denied(scope, found, "may not use the admin paths", repository=_asked(scope))
            return RegistryError(ErrorCode.DENIED, f"{found} may not use {ADMIN_PREFIX}")
        return None

    async def _mark_admin(self, scope: Scope, access: Access, header: bytes | None) -> None:
        """An open path that shows more to admins: credentials are optional there, and
        bad (or throttled) ones only mean "not an admin"; the answer's status stays
        public for probes."""
        found = await self._identify(scope, access, header) if header is not None else None
        identity = found if isinstance(found, str) else None
        scope["state"][IDENTITY] = identity
        scope["state"]["admin"] = identity is not None and self._admin(scope, access, identity)

    @staticmethod
    def _admin(scope: Scope, access: Access, identity: str) -> bool:
        if access.authenticator is None:
            client = scope.get("client") or ("", 0)
            return is_loopback(str(client[0]))
        return access.is_admin(identity)


class _FailClosed:
    """``send`` for a request judged by rules: a 2xx that no access decision let
    through becomes a 500 (and the route's body is dropped)."""

    def __init__(self, scope: Scope, send: Send) -> None:
        self.scope, self.send, self.blocked = scope, send, False

    async def __call__(self, message: Message) -> None:
        if self.blocked:
            return
        starts = message["type"] == "http.response.start"
        if starts and 200 <= message["status"] < 300 and not self.scope["state"].get(DECIDED):
            self.blocked = True
            log.error("%s %s answered without an access decision: refused (a bug)",
                      self.scope["method"], self.scope["path"][:200])  # fmt: skip
            error = RegistryError(ErrorCode.UNKNOWN, "internal error: no access decision")
            response = _error(error, self.scope["method"])
            await response(self.scope, _no_body, self.send)
            return
        await self.send(message)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
