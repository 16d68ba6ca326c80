"""Value types, routing and small helpers of the fake Google Artifact Registry.

The public value types (``Recorded``, ``Fault``, ``IssuedToken``, ``GarRepository``),
the constants and regexes, the route classifier, the registry and Google error shapes,
the in-memory records of manifests, image repositories and uploads, and the header,
byte-range and body-chunking helpers that ``FakeGAR`` and its mixins share; no server
state lives here. Import them from ``testkit.fakes.gar``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from starlette.responses import Response

Kind = Literal[
    "ping",
    "token",
    "manifest",
    "blob",
    "download",  # a signed blob download (gar_downloads)
    "upload",
    "tags",
    "referrers",
    "metadata",
    "other",
]
Buffer = bytes | bytearray

CHUNK = 256 * 1024
MANIFEST_LIMIT = 4 * 1024 * 1024
DEFAULT_LOCATIONS = (
    "us",
    "europe",
    "asia",
    "us-central1",
    "us-east1",
    "us-west1",
    "europe-west1",
    "europe-west4",
    "europe-north1",
    "asia-east1",
    "asia-northeast1",
    "australia-southeast1",
)
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?")
# ``/LOCATION/v2/`` plays LOCATION-docker.pkg.dev; ``/rep/LOCATION/v2/`` plays the regional
# endpoint docker.LOCATION.rep.pkg.dev (GAR.md N6).
_V2 = re.compile(r"(?:/rep/(?P<regional>[^/]+)|/(?P<location>[^/]+))?/v2/(?P<rest>.*)")
_V2_ROUTES: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    ("manifest", re.compile(r"(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    ("upload", re.compile(r"(?P<name>.+)/blobs/uploads/(?P<ref>[^/]*)")),
    ("blob", re.compile(r"(?P<name>.+)/blobs/(?P<ref>[^/]+)")),
    ("tags", re.compile(r"(?P<name>.+)/tags/(?P<ref>list)")),
    ("referrers", re.compile(r"(?P<name>.+)/referrers/(?P<ref>[^/]+)")),
)
_V1 = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/locations"
    r"(?:/(?P<location>[^/]+)/repositories(?:/(?P<repository>[^/]+))?)?"
)
_FAULT_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}


def _sha(data: Buffer, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


# ---------------------------------------------------------------- public value types


class Recorded(NamedTuple):
    method: str
    kind: Kind
    path: str
    location: str | None
    regional: bool = False  # came in on docker.LOCATION.rep.pkg.dev (``/rep/LOCATION``)


@dataclass(eq=False)
class Fault:
    """A misbehaviour for matching requests; unset matchers match anything.

    ``times`` counts down as the fault acts (``None``: every time); ``hits`` counts up::

        fake.add_fault(Fault(kind="blob", status=503, retry_after=1, times=2))
        fake.add_fault(Fault(method="GET", path=r"/manifests/latest$", delay=2.0))
        cut = fake.add_fault(Fault(kind="blob", truncate_at=1024, times=1))
    """

    method: str | None = None
    kind: Kind | None = None
    path: str | None = None  # regex, searched in the request path
    location: str | None = None
    times: int | None = None
    status: int | None = None
    retry_after: int | float | None = None  # header on 429/503 (and any status) when set
    delay: float = 0.0
    slow_body: float = 0.0  # seconds before each body chunk
    truncate_at: int | None = None  # bytes of body sent before the connection closes
    corrupt: bool = False  # flip one body byte, same length
    reset: bool = False  # abort the connection (RST); after truncate_at bytes if set
    chunked: bool = False  # drop Content-Length: the body goes chunked
    gzip: bool = False  # send the body with Content-Encoding: gzip (chunked)
    redirect: bool = False  # 307 to the same resource under /_redirected/ (same host)
    hits: int = field(default=0, init=False)

    @property
    def acts_on_body(self) -> bool:
        return (
            self.status is None
            and not self.redirect
            and (
                self.slow_body > 0
                or self.corrupt
                or self.truncate_at is not None
                or self.chunked
                or self.gzip
            )
        )

    def matches(self, method: str, kind: Kind, path: str, location: str | None) -> bool:
        return (
            (self.method is None or self.method.upper() == method)
            and (self.kind is None or self.kind == kind)
            and (self.location is None or self.location == location)
            and (self.path is None or re.search(self.path, path) is not None)
        )


@dataclass
class IssuedToken:
    token: str
    access_token: str
    location: str
    service: str | None
    scopes: dict[str, frozenset[str]]  # repository name -> granted actions
    expires_at: float


@dataclass
class GarRepository:
    location: str
    project: str
    repository: str
    format: str = "DOCKER"
    mode: str = "STANDARD_REPOSITORY"
    cleanup_policies: dict[str, Any] | None = None
    cleanup_policy_dry_run: bool = False
    immutable_tags: bool = False  # dockerConfig.immutableTags (docs/GAR.md, REST APIs)

    def resource(self) -> dict[str, Any]:
        name = f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"
        body: dict[str, Any] = {
            "name": name,
            "format": self.format,
            "mode": self.mode,
            "createTime": "2024-01-01T00:00:00Z",
            "updateTime": "2024-01-01T00:00:00Z",
        }
        if self.immutable_tags:
            body["dockerConfig"] = {"immutableTags": True}
        if self.cleanup_policies is not None:
            body["cleanupPolicies"] = self.cleanup_policies
        if self.cleanup_policy_dry_run:  # proto3 JSON leaves a false bool out (GAR.md R7)
            body["cleanupPolicyDryRun"] = True
        return body


# ---------------------------------------------------------------- internals


class _Route(NamedTuple):
    kind: Kind
    location: str | None = None
    name: str = ""
    ref: str = ""
    project: str = ""
    repository: str | None = None
    regional: bool = False


def classify(path: str, default_location: str | None = None) -> _Route:
    """What a request path addresses; ``/v2/...`` without a location uses the default."""
    match = _V2.fullmatch(path)
    if match and (match["location"] or match["regional"] or default_location):
        regional = match["regional"] is not None
        location = match["regional"] or match["location"] or default_location
        rest = match["rest"]
        if rest == "":
            return _Route("ping", location, regional=regional)
        if rest == "token":
            return _Route("token", location, regional=regional)
        for kind, pattern in _V2_ROUTES:
            if m := pattern.fullmatch(rest):
                return _Route(kind, location, m["name"], m["ref"], regional=regional)
        return _Route("other", location, regional=regional)
    if match := _V1.fullmatch(path):
        return _Route(
            "metadata",
            match["location"],
            project=match["project"],
            repository=match["repository"],
        )
    return _Route("other")


class _ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> Response:
        body = {"errors": [{"code": self.code, "message": self.message}]}
        return Response(json.dumps(body), self.status, self.headers, media_type="application/json")


@dataclass
class _Manifest:
    data: bytes
    media_type: str
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str] | None
    uploaded_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    size: int = 0  # the image's size as the tag list reports it (imageSizeBytes)


@dataclass
class _ImageRepo:
    blobs: set[str] = field(default_factory=set)
    manifests: dict[str, _Manifest] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Upload:
    id: str
    location: str
    name: str
    data: bytearray = field(default_factory=bytearray)
    state: str = ""


def _range_header(size: int) -> str:
    return f"0-{max(size - 1, 0)}"


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for a single ``bytes=`` range; None means the whole blob."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not match or match[1] == match[2] == "":
        return None
    if match[1] == "":
        start, end = max(size - int(match[2]), 0), size - 1
        if int(match[2]) == 0:
            start = size
    else:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or start > end:
        raise _ApiError(
            416, "RANGE_INVALID", "range not satisfiable", {"Content-Range": f"bytes */{size}"}
        )
    return start, end


async def _chunks(data: Buffer, start: int, end: int, chunk: int) -> AsyncIterator[memoryview]:
    view = memoryview(data)[start : end + 1]
    for offset in range(0, len(view), chunk):
        yield view[offset : offset + chunk]
