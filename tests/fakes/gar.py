"""A fake Google Artifact Registry: the upstream in most tests.

One server plays every location; registry routes live under ``/{location}/v2/`` and
the Artifact Registry REST API under ``/v1/``, so the proxy's upstream template in
tests is ``URL + "/{location}"`` and its API base is ``URL``::

    fake = FakeGAR(access_tokens={"ya29.test"})
    fake.put_image("us", "proj/repo/app", "1.0", build_image([make_layer()]))
    with fake.serve() as url:                   # real uvicorn on 127.0.0.1
        ...                                     # run the proxy against f"{url}/{{location}}"
    assert fake.count("GET", "blob") == 1       # what reached "GAR"

Auth (``auth="gcp"``): every ``/v2`` request needs ``Authorization: Bearer T`` with T a
Google access token in ``fake.access_tokens`` (unless ``registry_token_only``) or a
registry token bought at ``/{location}/v2/token`` with Basic
``oauth2accesstoken:<access token>``; otherwise 401 with the Bearer challenge. With
``strict_scopes`` a registry token only covers the repositories and actions it was
issued for (like the CNCF registry). Tokens in ``read_only_tokens`` get 403 DENIED on
writes. The REST API takes access tokens only.

Faults (``add_fault(Fault(...))``) match on method, kind, path regex and location.
A ``status`` fault answers instead of the registry; ``delay`` sleeps before the headers;
``slow_body``, ``truncate_at``, ``corrupt`` and a ``reset`` with ``truncate_at`` act on
successful responses with a body (a fault is used up only when it acts); a bare
``reset`` drops the connection before any response.

Content lives in memory: blobs once by digest, linked per (location, image name), as
in the CNCF registry; manifests keep their exact bytes and media type.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from proxy.oci import mediatypes as mt
from tests.images import Image, Index
from tests.servers import serve_in_thread

Kind = Literal[
    "ping", "token", "manifest", "blob", "upload", "tags", "referrers", "metadata", "other"
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
_V2 = re.compile(r"(?:/(?P<location>[^/]+))?/v2/(?P<rest>.*)")
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
_GOOGLE_STATUS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_FAULT_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}


def _sha(data: Buffer, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


# ---------------------------------------------------------------- public value types


class Recorded(NamedTuple):
    method: str
    kind: Kind
    path: str
    location: str | None


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
    hits: int = field(default=0, init=False)

    @property
    def acts_on_body(self) -> bool:
        return self.status is None and (
            self.slow_body > 0 or self.corrupt or self.truncate_at is not None
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

    def resource(self) -> dict[str, Any]:
        name = f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"
        body: dict[str, Any] = {
            "name": name,
            "format": self.format,
            "mode": self.mode,
            "createTime": "2024-01-01T00:00:00Z",
            "updateTime": "2024-01-01T00:00:00Z",
        }
        if self.cleanup_policies is not None:
            body["cleanupPolicies"] = self.cleanup_policies
            body["cleanupPolicyDryRun"] = self.cleanup_policy_dry_run
        return body


# ---------------------------------------------------------------- internals


class _Route(NamedTuple):
    kind: Kind
    location: str | None = None
    name: str = ""
    ref: str = ""
    project: str = ""
    repository: str | None = None


def classify(path: str, default_location: str | None = None) -> _Route:
    """What a request path addresses; ``/v2/...`` without a location uses the default."""
    match = _V2.fullmatch(path)
    if match and (match["location"] or default_location):
        location, rest = match["location"] or default_location, match["rest"]
        if rest == "":
            return _Route("ping", location)
        if rest == "token":
            return _Route("token", location)
        for kind, pattern in _V2_ROUTES:
            if m := pattern.fullmatch(rest):
                return _Route(kind, location, m["name"], m["ref"])
        return _Route("other", location)
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


def _google_error(status: int, message: str) -> Response:
    body = {"error": {"code": status, "message": message, "status": _GOOGLE_STATUS[status]}}
    return Response(json.dumps(body), status, media_type="application/json")


class _Cut(Exception):
    """Raised through the app once a fault has cut the connection."""


def _is_cut(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_is_cut(e) for e in error.exceptions)
    return isinstance(error, _Cut)


@dataclass
class _Manifest:
    data: bytes
    media_type: str
    subject: str | None
    artifact_type: str | None
    annotations: dict[str, str] | None


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


def _sock_transport(send: Send) -> asyncio.Transport | None:
    """uvicorn's transport behind ``send`` (its cycle's bound method), to cut connections."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if hasattr(transport, "abort") else None


async def _cut(send: Send, *, reset: bool) -> None:
    transport = _sock_transport(send)
    if transport is None:
        raise ConnectionResetError("fault: connection cut")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    # Let uvicorn see the disconnect, so it does not complain about an unfinished response.
    cycle = getattr(send, "__self__", None)
    for _ in range(400):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------- the fake


Handler = Callable[[Request, _Route], Awaitable[Response]]


class FakeGAR:
    """The fake registry and REST API as one ASGI app (Starlette requests and responses)."""

    def __init__(
        self,
        *,
        auth: Literal["gcp", "none"] = "gcp",
        access_tokens: Iterable[str] = (),
        read_only_tokens: Iterable[str] = (),
        registry_token_only: bool = False,
        strict_scopes: bool = True,
        registry_token_ttl: float = 3600,
        locations: Iterable[str] = DEFAULT_LOCATIONS,
        auto_create_repositories: bool = True,
        referrers_api: bool = True,
        upload_state_query: bool = False,
        absolute_locations: bool = False,
        chunk_size: int = CHUNK,
        default_location: str | None = "us",
    ) -> None:
        self.auth = auth
        self.access_tokens: set[str] = set(access_tokens)
        self.read_only_tokens: set[str] = set(read_only_tokens)
        self.registry_token_only = registry_token_only
        self.strict_scopes = strict_scopes
        self.registry_token_ttl = registry_token_ttl
        self.locations: set[str] = set(locations)
        self.auto_create_repositories = auto_create_repositories
        self.referrers_api = referrers_api
        self.upload_state_query = upload_state_query
        self.upload_chunk_min_length: int | None = None  # sent as OCI-Chunk-Min-Length
        self.absolute_locations = absolute_locations
        self.chunk_size = chunk_size
        self.default_location = default_location  # serves plain /v2/ for real clients
        self.issued_tokens: dict[str, IssuedToken] = {}
        self.repositories: dict[tuple[str, str, str], GarRepository] = {}
        self.requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self._blobs: dict[str, Buffer] = {}
        self._images: dict[tuple[str, str], _ImageRepo] = {}
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.RLock()
        self._handlers: dict[Kind, Handler] = {
            "ping": self._ping,
            "token": self._token,
            "manifest": self._manifest,
            "blob": self._blob,
            "upload": self._upload,
            "tags": self._tags,
            "referrers": self._referrers,
            "metadata": self._metadata,
        }

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Run under uvicorn on 127.0.0.1 (port 0); yields ``http://127.0.0.1:PORT``."""
        with serve_in_thread(self) as url:
            yield url

    # ------------------------------------------------------------ tokens, counts, faults

    def accept_access_token(self, token: str) -> None:
        with self._lock:
            self.access_tokens.add(token)

    def revoke_access_token(self, token: str) -> None:
        with self._lock:
            self.access_tokens.discard(token)

    def count(
        self,
        method: str | None = None,
        kind: Kind | None = None,
        *,
        path: str | None = None,
        location: str | None = None,
    ) -> int:
        """Requests received so far that match all the given filters (path: a regex)."""
        with self._lock:
            recorded = list(self.requests)
        return sum(
            1
            for r in recorded
            if (method is None or r.method == method.upper())
            and (kind is None or r.kind == kind)
            and (location is None or r.location == location)
            and (path is None or re.search(path, r.path))
        )

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _claim(self, fault: Fault) -> bool:
        with self._lock:
            if fault.times is not None and fault.times <= 0:
                return False
            if fault.times is not None:
                fault.times -= 1
            fault.hits += 1
            return True

    def _find_faults(
        self, method: str, route: _Route, path: str
    ) -> tuple[Fault | None, Fault | None]:
        """The first matching fault acting now, and the first acting on a response body."""
        now: Fault | None = None
        on_body: Fault | None = None
        with self._lock:
            live = [f for f in self._faults if f.times is None or f.times > 0]
        for fault in live:
            if not fault.matches(method, route.kind, path, route.location):
                continue
            if fault.acts_on_body:
                if on_body is None and method != "HEAD":
                    on_body = fault
            elif now is None and self._claim(fault):
                now = fault
        return now, on_body

    # ------------------------------------------------------------ seeding and reading

    def add_repository(
        self,
        location: str,
        project: str,
        repository: str,
        cleanup_policies: dict[str, Any] | None = None,
        **fields: Any,
    ) -> GarRepository:
        """Create (or return) a GAR repository; extra fields: format, mode, dry run."""
        with self._lock:
            self.locations.add(location)
            key = (location, project, repository)
            if key not in self.repositories:
                self.repositories[key] = GarRepository(
                    location, project, repository, cleanup_policies=cleanup_policies, **fields
                )
            elif cleanup_policies is not None:
                self.repositories[key].cleanup_policies = cleanup_policies
            return self.repositories[key]

    def _gar_key(self, location: str, name: str) -> tuple[str, str, str]:
        parts = name.split("/")
        if len(parts) < 2 or not all(parts):
            raise _ApiError(400, "NAME_INVALID", f"invalid repository name {name!r}")
        return location, parts[0], parts[1]

    def _repo(self, location: str, name: str, *, create: bool = False) -> _ImageRepo:
        key = self._gar_key(location, name)
        with self._lock:
            if key not in self.repositories:
                if not (create and self.auto_create_repositories):
                    raise _ApiError(404, "NAME_UNKNOWN", f"repository {key[2]!r} not found")
                self.add_repository(*key)
            return self._images.setdefault((location, name), _ImageRepo())

    def put_blob(self, location: str, repo: str, data: bytes) -> str:
        digest = _sha(data)
        self._link_blob(location, repo, digest, data)
        return digest

    def _link_blob(self, location: str, name: str, digest: str, data: Buffer) -> None:
        image_repo = self._repo(location, name, create=True)
        with self._lock:
            self._blobs.setdefault(digest, data)
            image_repo.blobs.add(digest)

    def put_manifest(
        self, location: str, repo: str, reference: str | None, data: bytes, media_type: str
    ) -> str:
        """Store manifest bytes as pushed (no checks); tag them when ``reference`` is a tag."""
        digest = _sha(data)
        doc = json.loads(data)
        subject = doc.get("subject")
        stored = _Manifest(
            data,
            media_type,
            subject.get("digest") if isinstance(subject, dict) else None,
            doc.get("artifactType") or (doc.get("config") or {}).get("mediaType"),
            doc.get("annotations"),
        )
        image_repo = self._repo(location, repo, create=True)
        with self._lock:
            image_repo.manifests[digest] = stored
            if reference and not reference.startswith(("sha256:", "sha512:")):
                image_repo.tags[reference] = digest
        return digest

    def put_image(self, location: str, repo: str, tag: str | None, image: Image | Index) -> str:
        """Seed an image or index (its images and blobs too); returns the manifest digest."""
        for blob in image.blobs:
            self._link_blob(location, repo, blob.digest, blob.data)
        if isinstance(image, Index):
            for child in image.images:
                self.put_manifest(location, repo, None, child.manifest, child.media_type)
        return self.put_manifest(location, repo, tag, image.manifest, image.media_type)

    put_index = put_image

    def get_blob(self, location: str, repo: str, digest: str) -> bytes | None:
        with self._lock:
            image_repo = self._images.get((location, repo))
            if image_repo is None or digest not in image_repo.blobs:
                return None
            return bytes(self._blobs[digest])

    def get_manifest(self, location: str, repo: str, ref: str) -> tuple[bytes, str] | None:
        """(bytes, media type) of a manifest by tag or digest, or None."""
        with self._lock:
            image_repo = self._images.get((location, repo))
            if image_repo is None:
                return None
            stored = image_repo.manifests.get(image_repo.tags.get(ref, ref))
            return (stored.data, stored.media_type) if stored else None

    def tags(self, location: str, repo: str) -> dict[str, str]:
        with self._lock:
            image_repo = self._images.get((location, repo))
            return dict(image_repo.tags) if image_repo else {}

    def delete_tag(self, location: str, repo: str, tag: str) -> None:
        with self._lock:
            self._images.get((location, repo), _ImageRepo()).tags.pop(tag, None)

    # ------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        route = classify(path, self.default_location)
        with self._lock:
            self.requests.append(Recorded(method, route.kind, path, route.location))
        request = Request(scope, receive)
        now, on_body = self._find_faults(method, route, path)
        wrapped = self._wrap_send(send, route, on_body)
        try:
            if now is not None:
                if now.delay:
                    await asyncio.sleep(now.delay)
                if now.reset:
                    await _cut(send, reset=True)
                    return
                if now.status is not None:
                    await self._fault_response(now, request, route)(scope, receive, wrapped)
                    return
            response = await self._respond(request, route)
            await response(scope, receive, wrapped)
        except Exception as error:
            if not _is_cut(error):
                raise

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, request: Request, route: _Route) -> Response:
        try:
            denied = self._authorize(request, route)
            if denied is not None:
                return denied
            handler = self._handlers.get(route.kind)
            if handler is None:
                raise _ApiError(404, "NOT_FOUND", f"no route for {request.url.path}")
            return await handler(request, route)
        except _ApiError as error:
            return error.response()

    def _wrap_send(self, send: Send, route: _Route, fault: Fault | None) -> Send:
        api_version = route.kind not in ("metadata", "other")
        state = {"active": False, "sent": 0, "corrupted": False}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                if api_version:
                    headers = list(message.get("headers", []))
                    headers.append((b"docker-distribution-api-version", b"registry/2.0"))
                    message = {**message, "headers": headers}
                if fault and 200 <= message["status"] < 300 and self._claim(fault):
                    state["active"] = True
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
            elif message["type"] == "http.response.body" and fault and state["active"]:
                message = await self._fault_body(message, fault, state, send)
            await send(message)

        return wrapped

    async def _fault_body(
        self, message: Message, fault: Fault, state: dict[str, Any], send: Send
    ) -> Message:
        body = bytes(message.get("body", b""))
        if fault.slow_body:
            await asyncio.sleep(fault.slow_body)
        if fault.corrupt and body and not state["corrupted"]:
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            body, state["corrupted"] = bytes(flipped), True
        if fault.truncate_at is not None:
            room = fault.truncate_at - state["sent"]
            if len(body) > room:
                if room > 0:
                    await send(
                        {"type": "http.response.body", "body": body[:room], "more_body": True}
                    )
                await _cut(send, reset=fault.reset)
                raise _Cut
        state["sent"] += len(body)
        return {**message, "body": body}

    def _fault_response(self, fault: Fault, request: Request, route: _Route) -> Response:
        status = fault.status or 500
        code = _FAULT_CODES.get(status, "UNKNOWN")
        if status == 404:
            code = {"manifest": "MANIFEST_UNKNOWN", "blob": "BLOB_UNKNOWN"}.get(
                route.kind, "NAME_UNKNOWN"
            )
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if status == 401 and route.location:
            headers["WWW-Authenticate"] = self._challenge(request, route)
        return _ApiError(status, code, f"injected fault ({status})", headers).response()

    # ------------------------------------------------------------ auth

    @staticmethod
    def _actions(method: str) -> frozenset[str]:
        return frozenset({"pull"} if method in ("GET", "HEAD") else {"pull", "push"})

    def _challenge(self, request: Request, route: _Route, error: str | None = None) -> str:
        realm = f"{request.url.scheme}://{request.url.netloc}/{route.location}/v2/token"
        value = f'Bearer realm="{realm}",service="{route.location}-docker.pkg.dev"'
        if route.name:
            actions = ",".join(sorted(self._actions(request.method)))
            value += f',scope="repository:{route.name}:{actions}"'
        return value + (f',error="{error}"' if error else "")

    def _authorize(self, request: Request, route: _Route) -> Response | None:
        """None when the request may go on, else the 401/403 to answer with."""
        if self.auth == "none" or route.kind == "token":
            return None
        token = _bearer(request.headers.get("authorization")) or ""
        with self._lock:
            is_access = token in self.access_tokens
            issued = self.issued_tokens.get(token)
        if route.kind == "metadata":
            if is_access:
                return None
            return _google_error(401, "Request had invalid authentication credentials.")
        writes = "push" in self._actions(request.method)
        if is_access and not self.registry_token_only:
            return self._denied(route) if writes and token in self.read_only_tokens else None
        if issued is None or issued.location != route.location:
            unknown = token and not is_access  # a raw access token just needs the dance
            return self._unauthorized(request, route, "invalid_token" if unknown else None)
        if issued.expires_at < time.monotonic():
            return self._unauthorized(request, route, "invalid_token")
        if writes and issued.access_token in self.read_only_tokens:
            return self._denied(route)
        granted = issued.scopes.get(route.name, frozenset())
        if route.name and self.strict_scopes and not self._actions(request.method) <= granted:
            return self._unauthorized(request, route, "insufficient_scope")
        return None

    def _unauthorized(self, request: Request, route: _Route, error: str | None) -> Response:
        challenge = self._challenge(request, route, error)
        message = error or "authentication required"
        return _ApiError(401, "UNAUTHORIZED", message, {"WWW-Authenticate": challenge}).response()

    def _denied(self, route: _Route) -> Response:
        return _ApiError(403, "DENIED", f"permission denied on {route.name}").response()

    async def _token(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        access_token = ""
        if self.auth == "gcp":
            creds = _basic(request.headers.get("authorization"))
            with self._lock:
                known = creds is not None and creds[1] in self.access_tokens
            if creds is None or creds[0] != "oauth2accesstoken" or not known:
                realm = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
                raise _ApiError(
                    401,
                    "UNAUTHORIZED",
                    "invalid credentials",
                    {"WWW-Authenticate": f'Basic realm="{realm}"'},
                )
            access_token = creds[1]
        scopes: dict[str, frozenset[str]] = {}
        for scope in request.query_params.getlist("scope"):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = {"pull", "push"} if actions == "*" else set(actions.split(","))
            if access_token in self.read_only_tokens:
                wanted.discard("push")
            if kind == "repository" and name:
                scopes[name] = frozenset(wanted & {"pull", "push"}) | scopes.get(name, frozenset())
        token = "regtok-" + secrets.token_urlsafe(24)
        issued = IssuedToken(
            token,
            access_token,
            route.location,
            request.query_params.get("service"),
            scopes,
            time.monotonic() + self.registry_token_ttl,
        )
        with self._lock:
            self.issued_tokens[token] = issued
        ttl = int(self.registry_token_ttl)
        body = {"token": token, "access_token": token, "expires_in": ttl}
        return Response(json.dumps(body), 200, media_type="application/json")

    # ------------------------------------------------------------ registry API

    async def _ping(self, request: Request, route: _Route) -> Response:
        return Response("{}", 200, media_type="application/json")

    def _url(self, request: Request, path: str) -> str:
        if self.absolute_locations:
            return f"{request.url.scheme}://{request.url.netloc}{path}"
        return path

    async def _manifest(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        if request.method == "PUT":
            return await self._put_manifest(request, route)
        image_repo = self._repo(route.location, route.name)
        with self._lock:
            digest = image_repo.tags.get(route.ref, route.ref)
            stored = image_repo.manifests.get(digest)
            if stored is not None and request.method == "DELETE":
                if route.ref == digest:
                    del image_repo.manifests[digest]
                    for tag in [t for t, d in image_repo.tags.items() if d == digest]:
                        del image_repo.tags[tag]
                else:
                    del image_repo.tags[route.ref]
        if stored is None:
            raise _ApiError(404, "MANIFEST_UNKNOWN", f"manifest {route.ref} not found")
        if request.method == "DELETE":
            return Response(status_code=202)
        if request.method not in ("GET", "HEAD"):
            raise _ApiError(405, "UNSUPPORTED", f"{request.method} on a manifest")
        headers = {
            "Docker-Content-Digest": digest,
            "Content-Type": stored.media_type,
            "Content-Length": str(len(stored.data)),
            "ETag": f'"{digest}"',
        }
        return Response(stored.data, 200, headers)

    async def _put_manifest(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MANIFEST_LIMIT:
                raise _ApiError(413, "SIZE_INVALID", "manifest too large")
        body = bytes(data)
        doc = self._validate_manifest(body, request.headers.get("content-type", ""))
        if ":" in route.ref and not _DIGEST.fullmatch(route.ref):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {route.ref!r}")
        digest = _sha(body, route.ref.split(":")[0] if ":" in route.ref else "sha256")
        if ":" in route.ref and route.ref != digest:
            raise _ApiError(400, "DIGEST_INVALID", "manifest digest does not match reference")
        if ":" not in route.ref and not _TAG.fullmatch(route.ref):
            raise _ApiError(400, "TAG_INVALID", f"invalid tag {route.ref!r}")
        image_repo = self._repo(route.location, route.name, create=True)
        with self._lock:
            missing = [
                d
                for d in self._references(doc)
                if d not in image_repo.blobs and d not in image_repo.manifests
            ]
        if missing:
            raise _ApiError(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown to registry: {missing[0]}")
        media_type = doc.get("mediaType") or request.headers["content-type"].split(";")[0].strip()
        self.put_manifest(route.location, route.name, route.ref, body, media_type)
        headers = {
            "Location": self._url(request, f"/{route.location}/v2/{route.name}/manifests/{digest}"),
            "Docker-Content-Digest": digest,
        }
        if isinstance(doc.get("subject"), dict):
            headers["OCI-Subject"] = str(doc["subject"].get("digest"))
        return Response(status_code=201, headers=headers)

    @staticmethod
    def _validate_manifest(body: bytes, content_type: str) -> dict[str, Any]:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _ApiError(400, "MANIFEST_INVALID", "manifest is not JSON") from None
        declared = content_type.split(";")[0].strip()
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            raise _ApiError(400, "MANIFEST_INVALID", "manifest must be schemaVersion 2 JSON")
        media_type = doc.get("mediaType") or declared
        if media_type not in mt.INDEX_TYPES | mt.IMAGE_TYPES:
            raise _ApiError(400, "MANIFEST_INVALID", f"unsupported media type {media_type!r}")
        if doc.get("mediaType") and declared in mt.MANIFEST_TYPES and declared != media_type:
            raise _ApiError(400, "MANIFEST_INVALID", "Content-Type does not match mediaType")
        if media_type in mt.INDEX_TYPES and not isinstance(doc.get("manifests"), list):
            raise _ApiError(400, "MANIFEST_INVALID", "index lacks manifests")
        if media_type in mt.IMAGE_TYPES and not isinstance(doc.get("config"), dict):
            raise _ApiError(400, "MANIFEST_INVALID", "image manifest lacks config")
        return doc

    @staticmethod
    def _references(doc: dict[str, Any]) -> list[str]:
        descriptors = [doc["config"], *doc.get("layers", [])] if "config" in doc else []
        descriptors += doc.get("manifests", [])
        try:
            return [str(d["digest"]) for d in descriptors if not d.get("urls")]
        except (KeyError, TypeError, AttributeError):
            raise _ApiError(400, "MANIFEST_INVALID", "malformed descriptor") from None

    def _blob_data(self, route: _Route, digest: str) -> Buffer:
        assert route.location is not None
        if not _DIGEST.fullmatch(digest):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
        image_repo = self._repo(route.location, route.name)
        with self._lock:
            if digest in image_repo.blobs:
                return self._blobs[digest]
        raise _ApiError(404, "BLOB_UNKNOWN", f"blob {digest} not found")

    async def _blob(self, request: Request, route: _Route) -> Response:
        data = self._blob_data(route, route.ref)
        if request.method == "DELETE":
            with self._lock:
                self._repo(route.location or "", route.name).blobs.discard(route.ref)
            return Response(status_code=202)
        if request.method not in ("GET", "HEAD"):
            raise _ApiError(405, "UNSUPPORTED", f"{request.method} on a blob")
        size = len(data)
        span = _byte_range(request.headers.get("range"), size)
        start, end = span or (0, size - 1)
        headers = {
            "Content-Length": str(end - start + 1 if size else 0),
            "Docker-Content-Digest": route.ref,
            "Content-Type": mt.OCTET_STREAM,
            "Accept-Ranges": "bytes",
            "ETag": f'"{route.ref}"',
        }
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206 if span is not None else 200
        if request.method == "HEAD" or size == 0:
            return Response(b"", status, headers)
        return StreamingResponse(_chunks(data, start, end, self.chunk_size), status, headers)

    # ------------------------------------------------------------ uploads

    def _upload_headers(self, request: Request, upload: _Upload) -> dict[str, str]:
        path = f"/{upload.location}/v2/{upload.name}/blobs/uploads/{upload.id}"
        if self.upload_state_query:
            upload.state = secrets.token_urlsafe(12)
            path += f"?_state={upload.state}"
        return {
            "Location": self._url(request, path),
            "Docker-Upload-UUID": upload.id,
            "Range": _range_header(len(upload.data)),
        }

    def _blob_created(self, request: Request, route: _Route, digest: str) -> Response:
        location = self._url(request, f"/{route.location}/v2/{route.name}/blobs/{digest}")
        headers = {"Location": location, "Docker-Content-Digest": digest}
        return Response(status_code=201, headers=headers)

    async def _finish(self, request: Request, route: _Route, data: Buffer, digest: str) -> Response:
        if not _DIGEST.fullmatch(digest):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
        if _sha(data, digest.split(":")[0]) != digest:
            raise _ApiError(400, "DIGEST_INVALID", "uploaded content does not match digest")
        self._link_blob(route.location or "", route.name, digest, data)
        return self._blob_created(request, route, digest)

    async def _upload(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        if route.ref == "":
            if request.method != "POST":
                raise _ApiError(405, "UNSUPPORTED", f"{request.method} on the uploads endpoint")
            return await self._start_upload(request, route)
        upload = self._session(request, route)
        if request.method == "GET":
            return Response(status_code=204, headers=self._upload_headers(request, upload))
        if request.method == "DELETE":
            with self._lock:
                self._uploads.pop(upload.id, None)
            return Response(status_code=204)
        if request.method not in ("PATCH", "PUT"):
            raise _ApiError(405, "UNSUPPORTED", f"{request.method} on an upload")
        await self._append(request, upload)
        if request.method == "PATCH":
            return Response(status_code=202, headers=self._upload_headers(request, upload))
        with self._lock:
            self._uploads.pop(upload.id, None)
        return await self._finish(
            request, route, upload.data, request.query_params.get("digest", "")
        )

    async def _start_upload(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        self._repo(route.location, route.name, create=True)
        params = request.query_params
        mount, source = params.get("mount"), params.get("from")
        if mount and source and self._can_mount(route, mount, source):
            self._link_blob(route.location, route.name, mount, self._blobs[mount])
            return self._blob_created(request, route, mount)
        if params.get("digest") and not mount:
            data = bytearray()
            async for chunk in request.stream():
                data += chunk
            return await self._finish(request, route, data, params["digest"])
        upload = _Upload(uuid.uuid4().hex, route.location, route.name)
        with self._lock:
            self._uploads[upload.id] = upload
        headers = self._upload_headers(request, upload)
        if self.upload_chunk_min_length is not None:
            headers["OCI-Chunk-Min-Length"] = str(self.upload_chunk_min_length)
        return Response(status_code=202, headers=headers)

    def _can_mount(self, route: _Route, digest: str, source: str) -> bool:
        """GAR mounts only within one location and project; elsewhere it starts an upload."""
        assert route.location is not None
        if source.split("/")[0] != route.name.split("/")[0]:
            return False
        with self._lock:
            image_repo = self._images.get((route.location, source))
            return image_repo is not None and digest in image_repo.blobs

    def _session(self, request: Request, route: _Route) -> _Upload:
        with self._lock:
            upload = self._uploads.get(route.ref)
        if upload is None or (upload.location, upload.name) != (route.location, route.name):
            raise _ApiError(404, "BLOB_UPLOAD_UNKNOWN", f"upload {route.ref} not found")
        if self.upload_state_query and request.query_params.get("_state") != upload.state:
            raise _ApiError(400, "BLOB_UPLOAD_INVALID", "stale or missing _state parameter")
        return upload

    async def _append(self, request: Request, upload: _Upload) -> None:
        content_range = request.headers.get("content-range")
        expected: int | None = None
        if content_range:
            match = _CONTENT_RANGE.fullmatch(content_range.strip())
            if match is None or int(match[1]) != len(upload.data):
                async for _ in request.stream():
                    pass
                raise _ApiError(
                    416,
                    "BLOB_UPLOAD_INVALID",
                    "chunk out of order",
                    {**self._upload_headers(request, upload)},
                )
            expected = int(match[2]) - int(match[1]) + 1
        before = len(upload.data)
        async for chunk in request.stream():
            upload.data += chunk
        received = len(upload.data) - before
        if expected is not None and received not in (0, expected):
            del upload.data[before:]
            raise _ApiError(
                416,
                "BLOB_UPLOAD_INVALID",
                "chunk length does not match Content-Range",
                {**self._upload_headers(request, upload)},
            )

    # ------------------------------------------------------------ listings

    async def _tags(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        image_repo = self._repo(route.location, route.name)
        with self._lock:
            if not image_repo.tags and not image_repo.manifests:
                raise _ApiError(404, "NAME_UNKNOWN", f"repository {route.name} not found")
            names = sorted(image_repo.tags)
        last = request.query_params.get("last")
        if last:
            names = [t for t in names if t > last]
        headers: dict[str, str] = {}
        n = request.query_params.get("n")
        if n is not None and n.isdigit() and int(n) < len(names):
            names = names[: int(n)]
            if names:
                link = f"/{route.location}/v2/{route.name}/tags/list?n={n}&last={names[-1]}"
                headers["Link"] = f'<{link}>; rel="next"'
        body = json.dumps({"name": route.name, "tags": names})
        return Response(body, 200, headers, media_type="application/json")

    async def _referrers(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        if not self.referrers_api:
            raise _ApiError(404, "UNSUPPORTED", "referrers API not supported")
        if not _DIGEST.fullmatch(route.ref):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {route.ref!r}")
        image_repo = self._repo(route.location, route.name)
        wanted = request.query_params.get("artifactType")
        with self._lock:
            found = sorted(
                (d, m) for d, m in image_repo.manifests.items() if m.subject == route.ref
            )
        descriptors = []
        for digest, stored in found:
            if wanted and stored.artifact_type != wanted:
                continue
            descriptor: dict[str, Any] = {
                "mediaType": stored.media_type,
                "digest": digest,
                "size": len(stored.data),
            }
            if stored.artifact_type:
                descriptor["artifactType"] = stored.artifact_type
            if stored.annotations:
                descriptor["annotations"] = stored.annotations
            descriptors.append(descriptor)
        body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors})
        headers = {"OCI-Filters-Applied": "artifactType"} if wanted else {}
        return Response(body, 200, headers, media_type=mt.OCI_INDEX)

    # ------------------------------------------------------------ REST metadata API

    async def _metadata(self, request: Request, route: _Route) -> Response:
        if request.method != "GET":
            return _google_error(404, "Method not found.")
        project = route.project
        with self._lock:
            if route.location is None:
                items: list[dict[str, Any]] = [
                    {
                        "name": f"projects/{project}/locations/{loc}",
                        "locationId": loc,
                        "displayName": loc,
                    }
                    for loc in sorted(self.locations)
                ]
                return self._page(request, "locations", items)
            if route.repository is None:
                items = [
                    r.resource()
                    for key, r in sorted(self.repositories.items())
                    if key[:2] == (route.location, project)
                ]
                return self._page(request, "repositories", items)
            repository = self.repositories.get((route.location, project, route.repository))
        if repository is None:
            return _google_error(404, "Requested entity was not found.")
        return Response(json.dumps(repository.resource()), media_type="application/json")

    @staticmethod
    def _page(request: Request, field_name: str, items: list[dict[str, Any]]) -> Response:
        token = request.query_params.get("pageToken") or "0"
        size = request.query_params.get("pageSize") or "1000"
        start = int(token) if token.isdigit() else 0
        stop = start + max(int(size) if size.isdigit() else 1000, 1)
        body: dict[str, Any] = {}
        if items[start:stop]:
            body[field_name] = items[start:stop]  # Google APIs omit empty lists
        if stop < len(items):
            body["nextPageToken"] = str(stop)
        return Response(json.dumps(body), media_type="application/json")
