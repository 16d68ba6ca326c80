"""The registry's one error type and the table binding OCI error codes to HTTP statuses.

Every failure a client can see is a ``RegistryError``: it carries an ``ErrorCode``
(whose HTTP status lives in one table, below), a message and optional detail.
``proxy.app`` installs one handler that writes the OCI envelope::

    {"errors": [{"code": "BLOB_UNKNOWN", "message": "...", "detail": {...}}]}

Raise it anywhere below the routes::

    raise RegistryError(ErrorCode.NAME_INVALID, "repository name must be lowercase")
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class ErrorCode(enum.Enum):
    BLOB_UNKNOWN = "BLOB_UNKNOWN"
    BLOB_UPLOAD_INVALID = "BLOB_UPLOAD_INVALID"
    BLOB_UPLOAD_UNKNOWN = "BLOB_UPLOAD_UNKNOWN"
    DIGEST_INVALID = "DIGEST_INVALID"
    MANIFEST_BLOB_UNKNOWN = "MANIFEST_BLOB_UNKNOWN"
    MANIFEST_INVALID = "MANIFEST_INVALID"
    MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
    NAME_INVALID = "NAME_INVALID"
    NAME_UNKNOWN = "NAME_UNKNOWN"
    SIZE_INVALID = "SIZE_INVALID"
    UNAUTHORIZED = "UNAUTHORIZED"
    DENIED = "DENIED"
    UNSUPPORTED = "UNSUPPORTED"
    TOOMANYREQUESTS = "TOOMANYREQUESTS"
    RANGE_INVALID = "RANGE_INVALID"
    UPSTREAM_UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN = "UNKNOWN"

    @property
    def status(self) -> int:
        return _STATUS[self]


# One table: code -> HTTP status (OCI distribution spec 1.1, "Error Codes").
_STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.BLOB_UNKNOWN: 404,
    ErrorCode.BLOB_UPLOAD_INVALID: 400,
    ErrorCode.BLOB_UPLOAD_UNKNOWN: 404,
    ErrorCode.DIGEST_INVALID: 400,
    ErrorCode.MANIFEST_BLOB_UNKNOWN: 400,
    ErrorCode.MANIFEST_INVALID: 400,
    ErrorCode.MANIFEST_UNKNOWN: 404,
    ErrorCode.NAME_INVALID: 400,
    ErrorCode.NAME_UNKNOWN: 404,
    ErrorCode.SIZE_INVALID: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.DENIED: 403,
    ErrorCode.UNSUPPORTED: 405,
    ErrorCode.TOOMANYREQUESTS: 429,
    ErrorCode.RANGE_INVALID: 416,
    ErrorCode.UPSTREAM_UNAVAILABLE: 503,
    ErrorCode.UNKNOWN: 500,
}


class RegistryError(Exception):
    """A failure with an OCI error code; the one exception type clients ever see."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status if status is not None else code.status
        self.headers: dict[str, str] = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return {"errors": [entry]}

    def __repr__(self) -> str:
        return f"RegistryError({self.code.value}, {self.message!r}, status={self.status})"
