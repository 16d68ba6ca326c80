"""``AccessControl``: one ASGI middleware that decides, before any route runs, whether
a request may proceed, answering the registry way when not:

- no or bad credentials where they are needed: 401 ``UNAUTHORIZED`` with
  ``WWW-Authenticate: Basic realm="gar-proxy"``, the challenge docker (``docker login``
  starts with ``GET /v2/``), podman, skopeo and containerd answer with Basic credentials;
- an identity without the right: 403 ``DENIED``.

Which right a request needs follows from its path: ``/v2/NAME/...`` GET/HEAD is a
pull of NAME, any other method, or any upload session, a push; a cross-repository
mount (``?mount=&from=``) also reads ``from``, and without that right the mount is
dropped, so the client uploads the blob as a registry without access to ``from``
would have it do;
``/_gar-proxy/*`` is admin; ``/healthz``, ``/readyz`` are open; ``/metrics`` is open
when ``access.metrics_public``. Without client auth every client is ``anonymous`` and
admin paths are for loopback clients only.

The identity is put in ``scope["state"]["identity"]`` (``request.state.identity``) for
logs; ``None`` for a request that needed none.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy import requestcontext
from proxy.auth.credentials import Authenticator
from proxy.auth.rules import ANONYMOUS, Rules
from proxy.config import AccessSettings, ConfigError, is_loopback
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository

log = logging.getLogger("gar_proxy.access")

REALM = 'Basic realm="gar-proxy"'
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ADMIN_PREFIX = "/_gar-proxy/"
_REPO_PATH = re.compile(
    r"^/v2/(?P<name>.+)/(manifests/[^/]+|blobs/uploads/?[^/]*|blobs/[^/]+|tags/list|referrers/[^/]+)$"
)


@dataclass(frozen=True)
class Access:
    """The loaded policy: who (``authenticator``, None when client auth is off) and what."""

    settings: AccessSettings
    authenticator: Authenticator | None
    rules: Rules

    @classmethod
    def load(cls, settings: AccessSettings) -> Access:
        """Reads the files now, so that a bad one stops start-up with one line."""
        authenticator = None
        try:
            if settings.enabled:
                authenticator = Authenticator.from_files(
                    settings.htpasswd_file, settings.tokens_file
                )
            rules = Rules.load(settings.rules_file)
        except ValueError as error:
            raise ConfigError(f"access: {error}") from None
        return cls(settings, authenticator, rules)


def _repository(name: str, query: dict[str, list[str]]) -> str | None:
    try:
        return Repository.parse(urllib.parse.unquote(name), ns=query.get("ns", [None])[0]).path
    except RegistryError:
        return None  # the route answers NAME_INVALID; nothing is read for it


class AccessControl:
    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = await self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> tuple[str | None, bool]:
        """(identity, credentials were offered). None with True: bad credentials."""
        authenticator = self.access.authenticator
        if authenticator is None:
            return ANONYMOUS, False
        header = None
        for key, value in scope["headers"]:  # the last one, as dict(headers) had it
            if key == b"authorization":
                header = value
        if header is None:
            return (ANONYMOUS if self.access.settings.anonymous else None), False
        return await authenticator.identify(header.decode("latin-1")), True

    async def _check(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        state = scope.setdefault("state", {})
        state["identity"] = None
        if path in OPEN_PATHS or (path == "/metrics" and self.access.settings.metrics_public):
            if path == "/readyz" and self.access.authenticator is not None:
                await self._mark_admin(scope, state)  # its detail is for admins
            return None
        identity, offered = await self._identify(scope)
        state["identity"] = identity
        # /v2/ is docker's ping and login: it must see the challenge to send credentials.
        ping = path.rstrip("/") == "/v2" and self.access.authenticator is not None
        if identity is None or (ping and identity == ANONYMOUS):
            return _unauthorized("bad credentials" if offered else None)
        if path.startswith(ADMIN_PREFIX):
            state["admin"] = self._admin(scope, identity)
            return None if state["admin"] else _denied(identity, "admin")
        if self.access.rules.grants is None:
            return None  # no rules file: every identity may pull, push and mount anything
        matched = _REPO_PATH.match(path)
        if matched is None:
            return None  # /v2/, /metrics, unknown paths (the app answers 404)
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        repository = _repository(matched["name"], query)
        if repository is None:
            return None
        # Upload sessions (even GET, their status) belong to pushers only.
        reads = scope["method"] in ("GET", "HEAD") and not matched[2].startswith("blobs/uploads")
        action = "pull" if reads else "push"
        if not self.access.rules.allows(identity, action, repository):
            if identity == ANONYMOUS and self.access.authenticator is not None:
                return _unauthorized(None)  # credentials might grant it
            return _denied(identity, f"{action} {repository}")
        self._check_mount(scope, identity, query)
        return None

    async def _mark_admin(self, scope: Scope, state: dict[str, object]) -> None:
        """An open path that shows more to admins: credentials are optional there, and
        bad ones only mean "not an admin" (the answer's status stays public)."""
        identity, _ = await self._identify(scope)
        state["identity"] = identity
        state["admin"] = identity is not None and self._admin(scope, identity)

    def _admin(self, scope: Scope, identity: str) -> bool:
        if self.access.authenticator is None:
            client = scope.get("client") or ("", 0)
            return is_loopback(str(client[0]))
        return identity != ANONYMOUS and self.access.rules.is_admin(identity)

    def _check_mount(self, scope: Scope, identity: str, query: dict[str, list[str]]) -> None:
        source = query.get("from", [None])[0]
        if "mount" not in query or source is None:
            return
        repository = _repository(source, query)
        if repository is not None and self.access.rules.allows(identity, "pull", repository):
            return
        kept = [(k, v) for k, values in query.items() if k not in ("mount", "from") for v in values]
        scope["query_string"] = urllib.parse.urlencode(kept).encode()


def _error(error: RegistryError) -> Response:
    requestcontext.note_error(error.code.wire, error.message)  # for the request's log line
    headers = {"Docker-Distribution-API-Version": "registry/2.0", **error.headers}
    return JSONResponse(error.envelope(), error.status, headers)


def _unauthorized(why: str | None) -> Response:
    message = why or "authentication required"
    challenge = {"WWW-Authenticate": REALM}
    return _error(RegistryError(ErrorCode.UNAUTHORIZED, message, headers=challenge))


def _denied(identity: str, what: str) -> Response:
    log.info("access denied: %s may not %s", identity, what)
    return _error(RegistryError(ErrorCode.DENIED, f"{identity} may not {what}"))
