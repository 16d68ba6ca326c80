"""Is the upstream a registry that takes gar-proxy's credentials? One authenticated
``GET /v2/``, as ``docker login`` checks a login: asked at start, by ``config check``
and by the background upstream check (``proxy.services.health``).

A registry answers ``/v2/`` with 200 once its credentials are right; before, 401 with a
``WWW-Authenticate`` challenge, which the request answers as every pull does
(``Authorizer``: the source's Google token, or a registry token bought at the
challenge's realm without a scope, which is docker's login). What stays a 401 or 403
after that is a rejection, reported with the upstream's own reason. A web server at a
wrong URL answers 404 or an HTML page: that is named at start-up, rather than
reported later, on the first pull, as "manifest unknown"::

    >>> UpstreamState("rejected", "https://up.example/v2/", 401, "bad password").line()
    "upstream https://up.example/v2/ rejected gar-proxy's credentials (HTTP 401): bad password"
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from proxy.oci.errors import RegistryError
from proxy.redact import redact
from proxy.upstream import errors
from proxy.upstream.auth import Authorizer, AuthState

PROBE_TIMEOUT = 5.0
# A Google token refreshed once, a challenge learnt, a registry token bought: 3 retries.
MAX_TRIES = 4
# The states, worst first where several could apply.
STATES = ("up", "down", "rejected", "not-a-registry", "offline")


@dataclass(frozen=True)
class UpstreamState:
    """What the last check found: ``state`` is one of ``STATES``; ``url`` is redacted."""

    state: str
    url: str
    status: int | None  # None: no answer at all
    reason: str

    @property
    def up(self) -> bool:
        return self.state == "up"

    def line(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        reason = f": {self.reason}" if self.reason else ""
        match self.state:
            case "up":
                return f"upstream {self.url} answered as a registry{status}"
            case "rejected":
                return f"upstream {self.url} rejected gar-proxy's credentials{status}{reason}"
            case "not-a-registry":
                return f"upstream {self.url} is not a registry{status}{reason}: check upstream.url"
            case "offline":
                return "offline mode: upstream not used"
        if self.status is None:
            return f"upstream {self.url} did not answer ({self.reason})"
        return f"upstream {self.url} is failing{status}{reason}"

    def as_json(self) -> dict[str, object]:
        return {"state": self.state, "url": self.url, "status": self.status,
                "reason": self.reason, "detail": self.line()}  # fmt: skip


def _looks_like_registry(response: httpx.Response) -> bool:
    if response.headers.get("docker-distribution-api-version"):
        return True
    challenge = response.headers.get("www-authenticate", "").lower()
    if response.status_code == 401 and challenge.startswith(("bearer", "basic")):
        return True
    kind = response.headers.get("content-type", "")
    return response.status_code < 500 and kind.startswith("application/json")


def classify(response: httpx.Response, url: str) -> UpstreamState:
    status = response.status_code
    registry = _looks_like_registry(response)
    if registry and 200 <= status < 300:
        return UpstreamState("up", url, status, "")
    if registry and status in (401, 403):
        return UpstreamState("rejected", url, status, errors.refusal_reason(response))
    if status == 429 or status >= 500:
        return UpstreamState("down", url, status, errors.refusal_reason(response))
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return UpstreamState("not-a-registry", url, status, kind)


async def check(http: httpx.AsyncClient, auth: Authorizer, base: str) -> UpstreamState:
    """``GET {base}/v2/`` with gar-proxy's credentials, as a pull would send them."""
    url = f"{base.rstrip('/')}/v2/"
    shown = redact(url)
    # No Google refresh from the check: the token source renews its token on its own,
    # and a forced refresh here raced the first pulls' own (a burst of cold pulls then
    # cost an extra token request). A 401 with a realm is learnt, and traded there.
    state = AuthState(scope="", refreshed=True)
    for _ in range(MAX_TRIES):
        try:
            authorization = await auth.authorization(base, state)
        except RegistryError as error:
            return _credential_failure(shown, error)
        headers = {"Authorization": authorization} if authorization else {}
        try:
            response = await http.get(url, headers=headers, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as error:
            return UpstreamState("down", shown, None, type(error).__name__)
        try:
            if response.status_code != 401 or not await auth.should_retry_401(
                base, response, state
            ):
                break
        except RegistryError as error:
            return _credential_failure(shown, error)
    return classify(response, shown)


def _credential_failure(url: str, error: RegistryError) -> UpstreamState:
    """No token to send (Google refused the key, the realm refused the password)."""
    if error.code.transient:  # Google or the realm could not be reached
        return UpstreamState("down", url, None, redact(error.message))
    return UpstreamState("rejected", url, None, redact(error.message))
