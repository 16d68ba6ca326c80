"""The registry's one error type and the one table of error codes.

Every failure a client can see is a ``RegistryError`` carrying an ``ErrorCode``. Each
code is declared once below with its wire name, its HTTP status, a default message and
where it comes from: the OCI distribution spec, the distribution registry's own codes
that clients already know (``UNAVAILABLE``, ``TOOMANYREQUESTS``, ``UNKNOWN``), or ours.
There are no per-raise status overrides: a failure whose status differs gets a code of
its own. ``proxy.app`` installs one handler that writes the OCI envelope::

    {"errors": [{"code": "BLOB_UNKNOWN", "message": "...", "detail": {...}}]}

Raise it anywhere below the routes::

    raise RegistryError(ErrorCode.NAME_INVALID, "repository name must be lowercase")

>>> ErrorCode.UPSTREAM_TIMEOUT.status, ErrorCode.UPSTREAM_TIMEOUT.wire
(504, 'UNAVAILABLE')
>>> ErrorCode.from_wire("MANIFEST_UNKNOWN") is ErrorCode.MANIFEST_UNKNOWN
True
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

OCI = "oci"  # OCI distribution spec 1.1, "Error Codes"
DISTRIBUTION = "distribution"  # the CNCF registry's codes, which clients know too
OURS = "gar-proxy"


class ErrorCode(enum.Enum):
    """(wire name, HTTP status, default message, origin), registered once."""

    # OCI distribution spec
    BLOB_UNKNOWN = ("BLOB_UNKNOWN", 404, "blob unknown to registry", OCI)
    BLOB_UPLOAD_INVALID = ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid", OCI)
    BLOB_UPLOAD_UNKNOWN = ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry", OCI)
    DIGEST_INVALID = ("DIGEST_INVALID", 400, "provided digest did not match content", OCI)
    MANIFEST_BLOB_UNKNOWN = ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references unknown blob", OCI)
    MANIFEST_INVALID = ("MANIFEST_INVALID", 400, "manifest invalid", OCI)
    MANIFEST_UNKNOWN = ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry", OCI)
    NAME_INVALID = ("NAME_INVALID", 400, "invalid repository name", OCI)
    NAME_UNKNOWN = ("NAME_UNKNOWN", 404, "repository name not known to registry", OCI)
    SIZE_INVALID = ("SIZE_INVALID", 400, "provided length did not match content length", OCI)
    UNAUTHORIZED = ("UNAUTHORIZED", 401, "authentication required", OCI)
    DENIED = ("DENIED", 403, "requested access to the resource is denied", OCI)
    UNSUPPORTED = ("UNSUPPORTED", 405, "the operation is unsupported", OCI)
    TOOMANYREQUESTS = ("TOOMANYREQUESTS", 429, "too many requests", OCI)
    # The distribution registry's own, which clients print as they do the spec's
    UPSTREAM_UNAVAILABLE = ("UNAVAILABLE", 503, "service unavailable", DISTRIBUTION)
    UNKNOWN = ("UNKNOWN", 500, "unknown error", DISTRIBUTION)
    PAGINATION_NUMBER_INVALID = (
        "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested", DISTRIBUTION
    )  # fmt: skip
    # Ours
    RANGE_INVALID = ("RANGE_INVALID", 416, "requested range not satisfiable", OURS)
    # Ours. Where a client already knows a wire name for the kind of failure (a size,
    # an unavailable upstream), ours reuse it with the status that fits.
    TOO_LARGE = ("SIZE_INVALID", 413, "request body too large", OURS)
    HEADERS_TOO_LARGE = ("SIZE_INVALID", 431, "request headers too large", OURS)
    # The client went away mid-request: an answer nobody reads, logged as what it is.
    CLIENT_GONE = ("CLIENT_GONE", 400, "the client left mid-request", OURS)
    ROUTE_UNKNOWN = ("UNSUPPORTED", 404, "not part of the registry API", OURS)
    UPSTREAM_REJECTED = ("UPSTREAM_REJECTED", 400, "upstream refused the request", OURS)
    UPSTREAM_BAD_GATEWAY = ("UNAVAILABLE", 502, "upstream failed", OURS)
    UPSTREAM_TIMEOUT = ("UNAVAILABLE", 504, "upstream timed out", OURS)
    UPSTREAM_CORRUPT = ("DIGEST_INVALID", 502, "upstream content does not match its digest", OURS)
    CACHE_EVICTED = ("CACHE_EVICTED", 503, "evicted as soon as it was fetched", OURS)
    CACHE_FULL = ("UNAVAILABLE", 503, "no room on the cache disk", OURS)
    # Google or the registry refused gar-proxy's own credentials (expired login, revoked
    # key): DENIED as clients know it, and, unlike a permission answer, no reason to
    # stop serving what is cached (see ``serve_stale``).
    CREDENTIALS_REJECTED = ("DENIED", 403, "gar-proxy's credentials were refused", OURS)
    # Ours, from Artifact Registry's and Container Analysis' REST APIs (proxy.gar.errors).
    # A vulnerability-gate refusal is the spec's DENIED.
    SCAN_TIMEOUT = ("SCAN_TIMEOUT", 504, "the vulnerability scan did not finish in time", OURS)
    SCAN_FAILED = ("SCAN_FAILED", 502, "the vulnerability scan failed", OURS)
    SCAN_UNSUPPORTED = ("SCAN_UNSUPPORTED", 422, "the image cannot be scanned", OURS)
    REPOSITORY_FORMAT = ("NAME_INVALID", 400, "not a Docker repository", OURS)
    QUERY_INVALID = ("QUERY_INVALID", 400, "invalid query parameter", OURS)
    # Ours, for HTTP itself (RFC 9112): answered before any route runs.
    HOST_INVALID = ("HOST_INVALID", 400, "HTTP/1.1 needs exactly one Host header", OURS)
    # Two credentials: which one a front proxy or a log reads is anyone's guess.
    AUTHORIZATION_INVALID = ("UNAUTHORIZED", 400, "send one Authorization header", OURS)
    REQUEST_TIMEOUT = ("REQUEST_TIMEOUT", 408, "the request did not arrive in time", OURS)
    TOO_MANY_CONNECTIONS = ("UNAVAILABLE", 503, "too many open connections", OURS)
    GAR_NOT_FOUND = ("NAME_UNKNOWN", 404, "not found in Artifact Registry", OURS)

    def __init__(self, wire: str, status: int, message: str, origin: str) -> None:
        self.wire = wire
        self.status = status
        self.default_message = message
        self.origin = origin

    @property
    def transient(self) -> bool:
        """Upstream or server trouble, not an answer about the content: retry later,
        or serve what is cached meanwhile."""
        return self.status >= 500 or self is ErrorCode.TOOMANYREQUESTS

    @property
    def serve_stale(self) -> bool:
        """Upstream cannot answer right now, for reasons that say nothing about the
        content: a cached tag may be served stale (within ``cache.max_stale``)."""
        return self.transient or self is ErrorCode.CREDENTIALS_REJECTED

    @classmethod
    def from_wire(cls, wire: str | None) -> ErrorCode | None:
        return _BY_WIRE.get(wire or "")


# A wire name shared by several codes maps to the first, the one the spec defines.
_BY_WIRE: dict[str, ErrorCode] = {}
for _code in ErrorCode:
    _BY_WIRE.setdefault(_code.wire, _code)


class RegistryError(Exception):
    """A failure with an error code; the one exception type clients ever see."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        message = message or code.default_message
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def status(self) -> int:
        return self.code.status

    @property
    def transient(self) -> bool:
        return self.code.transient

    def envelope(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.code.wire, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return {"errors": [entry]}

    def __repr__(self) -> str:
        return f"RegistryError({self.code.wire}, {self.message!r}, status={self.status})"
