"""What one upstream call is: its value across attempts and redirects, its label for
metrics, what its ``Retry-After`` means, and whether a failure was its body's.

``proxy.upstream.client.Upstream`` is the policy around these; they hold no state.
"""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass

import httpx

from proxy.oci.errors import RegistryError
from proxy.oci.names import Repository
from proxy.upstream.auth import AuthState

Body = bytes | AsyncIterable[bytes] | None
_OPERATIONS = (("/blobs/uploads", "upload"), ("/artifacts-uploads/", "upload"),
               ("/blobs/", "blob"), ("/artifacts-downloads/", "blob"), ("/manifests/", "manifest"),
               ("/tags/", "tags"), ("/referrers/", "referrers"))  # fmt: skip
# Response extension: what the request asked for (a URL, or a label for an upload
# session), never where a redirect took it; errors reading the body name this.
ASKED = "gar_proxy.asked"


def operation(method: str, path: str) -> str:
    """A bounded label for an upstream call: ``blob_get``, ``manifest_head``, ``upload_patch``.

    >>> operation("HEAD", "/manifests/1.0"), operation("PATCH", "/blobs/uploads/u?_state=x")
    ('manifest_head', 'upload_patch')
    >>> operation("PUT", "/artifacts-uploads/namespaces/p/repositories/r/uploads/AB")
    'upload_put'
    >>> operation("GET", "/artifacts-downloads/namespaces/p/repositories/r/downloads/AB")
    'blob_get'
    """
    kind = next((k for marker, k in _OPERATIONS if marker in path), "other")
    return f"{kind}_{method.lower()}"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (``now``: epoch seconds).

    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> retry_after_seconds("3", now=0), retry_after_seconds("soon", now=0)
    (3.0, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - now)


@dataclass(frozen=True)
class Call:
    """What one logical request to upstream is, across its attempts and redirects."""

    method: str
    repo: Repository
    location: str
    base: str  # the upstream's base URL: its origin is where credentials may go
    url: str
    params: Mapping[str, str] | None
    headers: dict[str, str]
    content: Body
    write: bool
    lean_body: bool
    label: str | None
    state: AuthState

    @property
    def replayable(self) -> bool:
        return self.content is None or isinstance(self.content, bytes)

    @property
    def where(self) -> str:
        """What errors and logs call it: the label, or the URL asked for."""
        return self.label or self.url


class Unreachable(Exception):
    """One HTTP request of a call failed before any answer (``error``: httpx's). Only
    the retry layer catches it: another try, or the failure translated once."""

    def __init__(self, error: httpx.HTTPError) -> None:
        super().__init__(str(error))
        self.error = error


def body_failure(error: BaseException) -> RegistryError | None:
    """The ``RegistryError`` a request body raised, if that is what httpx reports."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, RegistryError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
