"""The one place where upstream answers and transport failures become RegistryErrors.

Only ``proxy.upstream`` calls these: services see typed results and registry errors,
never a status code.

What upstream said is passed on, in the client's error message and in the log: the
registry's ``{"errors": [{"code", "message"}]}`` and Google's REST shape
``{"error": {"message", "status", "details": [{"reason", ...}]}}`` (docs/GAR.md A11,
R1) alike, the ``ErrorInfo`` reason first (``SERVICE_DISABLED: ...``). A long message
is cut in the middle, never at its ends: GAR's IAM refusals put the permission first
and "(or it may not exist)" last.

>>> bounded("x" * 50 + " the reason", limit=30)
'xxxxxxxxxxxxxxxxx … the reason'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from proxy.oci.errors import ErrorCode, RegistryError
from proxy.redact import redact
from proxy.upstream.challenge import parse_challenge

log = logging.getLogger("gar_proxy.upstream")
# Statuses worth another try after a pause: rate limits and server trouble.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# How much of an error body we read to find the registry's own message.
ERROR_BODY_LIMIT = 64 * 1024
# How much of upstream's message a client sees; GAR's IAM refusals are ~200 characters.
MESSAGE_LIMIT = 600


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line, at most about ``limit`` characters, cut in the middle."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    tail = limit // 3
    return f"{text[: limit - tail - 3].rstrip()} … {text[-tail:].lstrip()}"


def _google_reason(error: Mapping[str, Any]) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason"):
            return str(detail["reason"])
    return None


def upstream_message(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) from an error body in the registry's or Google's shape; for a
    Google error the code is its ``ErrorInfo`` reason, or else its status name."""
    try:
        document = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    errors = document.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return str(first.get("code") or ""), str(first.get("message") or "")
    error = document.get("error")
    if isinstance(error, dict):  # Google's REST shape (AIP-193)
        reason = _google_reason(error) or error.get("status")
        message = str(error.get("message") or "")
        return (str(reason) if reason else None), message
    if isinstance(error, str):  # an OAuth error: {"error": "invalid_grant", ...}
        return error, str(document.get("error_description") or "")
    return None, None


def _described(body: bytes) -> tuple[str | None, str | None]:
    """(registry code, what upstream said for a person): bounded, redacted, its reason
    first when the code is a Google reason rather than a registry code."""
    code, message = upstream_message(body[:ERROR_BODY_LIMIT])
    if not message and not code:
        return None, None
    message = redact(message or "")  # it may quote an upload or signed URL back at us
    if code and ErrorCode.from_wire(code) is None:
        message = f"{code}: {message}" if message else code
    return code, bounded(message) if message else None


@dataclass(frozen=True)
class Answer:
    """What a refusal from upstream becomes: its code, the words a client reads before
    upstream's own, whether it is logged (the proxy's own access was refused), whether
    upstream's ``Retry-After`` is passed on, and whether the client is told when to try
    again."""

    code: ErrorCode
    words: str
    logged: bool = False
    retry_after: bool = False
    when: bool = False


ANSWERS = {
    401: Answer(ErrorCode.CREDENTIALS_REJECTED, "upstream rejected gar-proxy's credentials",
                logged=True),
    403: Answer(ErrorCode.DENIED, "upstream denied access", logged=True),
    404: Answer(ErrorCode.NAME_UNKNOWN, "not found upstream"),  # or the code it named
    405: Answer(ErrorCode.UNSUPPORTED, "upstream does not support this"),
    413: Answer(ErrorCode.TOO_LARGE, "upstream refused the size"),
    416: Answer(ErrorCode.RANGE_INVALID, "range not satisfiable upstream"),
    429: Answer(ErrorCode.TOOMANYREQUESTS, "upstream rate limit", retry_after=True),
    503: Answer(ErrorCode.UPSTREAM_UNAVAILABLE, "upstream is unavailable (HTTP 503)",
                retry_after=True, when=True),
    504: Answer(ErrorCode.UPSTREAM_TIMEOUT, "upstream timed out (HTTP 504)",
                retry_after=True, when=True),
}  # fmt: skip


def answer(status: int, named: ErrorCode | None, not_found: ErrorCode) -> Answer:
    """The row for ``status``; ``named``: the registry code upstream's body gave.

    >>> answer(404, ErrorCode.MANIFEST_UNKNOWN, ErrorCode.NAME_UNKNOWN).code.name
    'MANIFEST_UNKNOWN'
    >>> answer(409, None, ErrorCode.NAME_UNKNOWN).words
    'upstream answered HTTP 409'
    >>> answer(502, None, ErrorCode.NAME_UNKNOWN).code.name
    'UPSTREAM_BAD_GATEWAY'
    """
    own = named if named is not None and named.status == status else None
    if status == 404:
        return Answer(own or not_found, ANSWERS[404].words)
    if status in ANSWERS:
        return ANSWERS[status]
    if 400 <= status < 500 and own is not None:
        return Answer(own, "")  # another refusal, the registry's own: in its words
    if 400 <= status < 500:
        return Answer(ErrorCode.UPSTREAM_REJECTED, f"upstream answered HTTP {status}")
    return Answer(
        ErrorCode.UPSTREAM_BAD_GATEWAY, f"upstream failed with HTTP {status}", retry_after=True
    )


def from_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    not_found: ErrorCode = ErrorCode.NAME_UNKNOWN,
) -> RegistryError:
    """Translate a non-success upstream answer (``body``: its first bytes, if read)."""
    code, said = _described(body)
    row = answer(status, ErrorCode.from_wire(code), not_found)
    message = ": ".join(part for part in (row.words, said) if part)
    retry_after = headers.get("retry-after", "").strip() if row.retry_after else ""
    if row.when:  # server trouble: say when to try again
        message += f"; retry after {retry_after} s" if retry_after.isdigit() else "; retry later"
    if row.logged:
        log.warning("%s", message)
    later = {"Retry-After": retry_after} if retry_after else {}
    return RegistryError(row.code, message or None, headers=later)


def from_token_service(
    status: int, headers: Mapping[str, str], body: bytes, scopes: str
) -> RegistryError:
    """The token endpoint's refusal, in its own words (docs/GAR.md A4-A6): a 403 is a
    permission answer for ``scopes`` (DENIED), a 401 a credential the token service
    cannot verify; trouble (429, 5xx) is retried by clients as any upstream trouble."""
    if status == 403:
        _, said = _described(body)
        message = f"the upstream token service denied {scopes}: {said or 'HTTP 403'}"
        log.warning("%s", message)
        return RegistryError(ErrorCode.DENIED, message)
    if status in (400, 401):
        _, said = _described(body)
        message = (
            f"the upstream token service rejected gar-proxy's credentials "
            f"(HTTP {status}) for {scopes}: {said or 'no reason given'}"
        )
        log.warning("%s", message)
        return RegistryError(ErrorCode.CREDENTIALS_REJECTED, message)
    if status == 404:
        return RegistryError(
            ErrorCode.UPSTREAM_BAD_GATEWAY,
            "the upstream token service's realm answered 404; the registry named a realm "
            "that is not there",
        )
    return from_status(status, headers, body)


def from_response(
    response: httpx.Response, body: bytes, *, not_found: ErrorCode = ErrorCode.NAME_UNKNOWN
) -> RegistryError:
    return from_status(response.status_code, response.headers, body, not_found=not_found)


def from_transport(error: httpx.HTTPError, url: str) -> RegistryError:
    # The URL's query may hold a signed-URL or upload state, its userinfo a password:
    # never pass them on.
    where = redact(url.split("?")[0])
    if isinstance(error, httpx.TimeoutException):
        return RegistryError(
            ErrorCode.UPSTREAM_TIMEOUT,
            f"upstream timed out: {type(error).__name__}{_limit(error)} for {where}",
        )
    return RegistryError(
        ErrorCode.UPSTREAM_BAD_GATEWAY, f"upstream unreachable: {type(error).__name__} for {where}"
    )


_PHASES = ((httpx.ConnectTimeout, "connect"), (httpx.ReadTimeout, "read"),
           (httpx.WriteTimeout, "write"), (httpx.PoolTimeout, "pool"))  # fmt: skip


def _limit(error: httpx.TimeoutException) -> str:
    """The limit that ran out, as the request carried it: `` after 10 s``.

    >>> request = httpx.Request("GET", "https://x", extensions={"timeout": {"connect": 0.5}})
    >>> _limit(httpx.ConnectTimeout("", request=request))
    ' after 0.5 s'
    """
    phase = next((name for kind, name in _PHASES if isinstance(error, kind)), None)
    try:
        limits = error.request.extensions.get("timeout") or {}
    except RuntimeError:  # raised without its request
        return ""
    seconds = limits.get(phase) if phase else None
    return f" after {seconds:g} s" if isinstance(seconds, int | float) else ""


def refusal_reason(response: httpx.Response) -> str:
    """The upstream's own words for a refusal (``config check``, the upstream check): a
    registry error's message, a Google error's (its reason first), a plain-text body or a
    challenge's ``error``; on one line, bounded and redacted."""
    _, said = _described(response.content)
    if said:
        return said
    text = ""
    if response.headers.get("content-type", "").startswith("text/plain"):
        text = response.content[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
    if not text.strip():
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        text = challenge.params.get("error", "") if challenge is not None else ""
    return bounded(redact(text))
