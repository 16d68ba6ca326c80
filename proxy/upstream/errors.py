"""The one place where upstream answers and transport failures become RegistryErrors.

Only ``proxy.upstream`` calls these: services see typed results and registry errors,
never a status code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

from proxy.oci.errors import ErrorCode, RegistryError
from proxy.redact import redact
from proxy.upstream.challenge import parse_challenge

# Statuses worth another try after a pause: rate limits and server trouble.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# How much of an error body we read to find the registry's own message.
ERROR_BODY_LIMIT = 64 * 1024
REASON_LIMIT = 300


def _upstream_message(body: bytes) -> tuple[str | None, str | None]:
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return str(first.get("code") or ""), str(first.get("message") or "")
    except (ValueError, AttributeError, IndexError, TypeError):
        return None, None


def from_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    not_found: ErrorCode = ErrorCode.NAME_UNKNOWN,
) -> RegistryError:
    """Translate a non-success upstream answer (``body``: its first bytes, if read)."""
    upstream_code, upstream_message = _upstream_message(body[:ERROR_BODY_LIMIT])
    if upstream_message:  # it may quote an upload or signed URL back at us
        upstream_message = redact(upstream_message)
    suffix = f": {upstream_message}" if upstream_message else ""
    known = ErrorCode.from_wire(upstream_code)
    if status == 404:
        code = known if known is not None and known.status == 404 else not_found
        return RegistryError(code, f"not found upstream{suffix}")
    if status == 429:
        retry = {"Retry-After": headers["retry-after"]} if "retry-after" in headers else {}
        return RegistryError(
            ErrorCode.TOOMANYREQUESTS, f"upstream rate limit{suffix}", headers=retry
        )
    if status == 401:
        message = f"upstream rejected gar-proxy's credentials{suffix}"
        return RegistryError(ErrorCode.CREDENTIALS_REJECTED, message)
    if status == 403:
        return RegistryError(ErrorCode.DENIED, f"upstream denied access{suffix}")
    if status == 416:
        return RegistryError(ErrorCode.RANGE_INVALID, f"range not satisfiable upstream{suffix}")
    if status == 413:
        return RegistryError(ErrorCode.TOO_LARGE, f"upstream refused the size{suffix}")
    if status == 405:
        return RegistryError(ErrorCode.UNSUPPORTED, f"upstream does not support this{suffix}")
    if 400 <= status < 500:
        if known is not None and known.status == status:
            return RegistryError(known, upstream_message or None)
        return RegistryError(
            ErrorCode.UPSTREAM_REJECTED, f"upstream answered HTTP {status}{suffix}"
        )
    # Server trouble: pass on upstream's Retry-After, and say when to try again.
    retry_after = headers.get("retry-after", "").strip()
    later = {"Retry-After": retry_after} if retry_after else {}
    when = f"; retry after {retry_after} s" if retry_after.isdigit() else "; retry later"
    if status == 504:
        return RegistryError(
            ErrorCode.UPSTREAM_TIMEOUT,
            f"upstream timed out (HTTP 504){suffix}{when}",
            headers=later,
        )
    if status == 503:
        return RegistryError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            f"upstream is unavailable (HTTP 503){suffix}{when}",
            headers=later,
        )
    return RegistryError(
        ErrorCode.UPSTREAM_BAD_GATEWAY, f"upstream failed with HTTP {status}{suffix}", headers=later
    )


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
    """The upstream's own words for a refusal: a registry error's message, a Google
    error's, a challenge's ``error``; bounded and redacted."""
    text = ""
    try:
        body = json.loads(response.content[:ERROR_BODY_LIMIT])
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors and isinstance(errors[0], dict):
            text = str(errors[0].get("message") or errors[0].get("code") or "")
        elif isinstance(body, dict) and isinstance(body.get("error"), dict):
            text = str(body["error"].get("message") or "")
        elif isinstance(body, dict) and body.get("details"):
            text = str(body["details"])
    except (ValueError, TypeError, AttributeError):
        pass
    if not text and response.headers.get("content-type", "").startswith("text/plain"):
        text = response.content[:REASON_LIMIT].decode("utf-8", "replace")
    if not text:
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        text = challenge.params.get("error", "") if challenge is not None else ""
    return redact(" ".join(text.split())[:REASON_LIMIT])
