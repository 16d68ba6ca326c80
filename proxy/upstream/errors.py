"""The one place where upstream answers and transport failures become RegistryErrors."""

from __future__ import annotations

import json

import httpx

from proxy.oci.errors import ErrorCode, RegistryError

# Statuses worth another try after a pause: rate limits and server trouble.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# How much of an error body we read to find the registry's own message.
_ERROR_BODY_LIMIT = 64 * 1024


def is_transient(error: RegistryError) -> bool:
    """Upstream trouble (not an answer about the content): serve stale data if we can."""
    return error.code in (ErrorCode.UPSTREAM_UNAVAILABLE, ErrorCode.TOOMANYREQUESTS) or (
        error.status >= 500
    )


def _upstream_message(body: bytes) -> tuple[str | None, str | None]:
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return str(first.get("code") or ""), str(first.get("message") or "")
    except (ValueError, AttributeError, IndexError, TypeError):
        return None, None


def from_response(
    response: httpx.Response, body: bytes, *, not_found: ErrorCode = ErrorCode.NAME_UNKNOWN
) -> RegistryError:
    """Translate a non-success upstream answer (``body`` is its first bytes, if read)."""
    status = response.status_code
    upstream_code, upstream_message = _upstream_message(body[:_ERROR_BODY_LIMIT])
    suffix = f": {upstream_message}" if upstream_message else ""
    if status == 404:
        code = ErrorCode.__members__.get(upstream_code or "", not_found)
        if code.status != 404:
            code = not_found
        return RegistryError(code, f"not found upstream{suffix}")
    if status == 429:
        headers = (
            {"Retry-After": response.headers["retry-after"]}
            if ("retry-after" in response.headers)
            else {}
        )
        return RegistryError(
            ErrorCode.TOOMANYREQUESTS, f"upstream rate limit{suffix}", headers=headers
        )
    if status == 401:
        return RegistryError(ErrorCode.DENIED, f"upstream rejected gar-proxy's credentials{suffix}")
    if status == 403:
        return RegistryError(ErrorCode.DENIED, f"upstream denied access{suffix}")
    if status == 416:
        return RegistryError(ErrorCode.RANGE_INVALID, f"range not satisfiable upstream{suffix}")
    if 400 <= status < 500:
        known = ErrorCode.__members__.get(upstream_code or "")
        if known is not None and known.status == status:
            return RegistryError(known, upstream_message or known.value)
        return RegistryError(
            ErrorCode.UNKNOWN, f"upstream answered HTTP {status}{suffix}", status=status
        )
    return RegistryError(
        ErrorCode.UPSTREAM_UNAVAILABLE, f"upstream failed with HTTP {status}{suffix}", status=502
    )


def from_transport(error: httpx.HTTPError, url: str) -> RegistryError:
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "unreachable"
    # The URL has no secrets (tokens travel in headers only).
    return RegistryError(
        ErrorCode.UPSTREAM_UNAVAILABLE,
        f"upstream {kind}: {type(error).__name__} for {url.split('?')[0]}",
        status=504 if kind == "timed out" else 502,
    )
