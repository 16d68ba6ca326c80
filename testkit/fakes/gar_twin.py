"""A second GAR, built from the public evidence by someone other than the proxy's authors.

``testkit/fakes/gar*.py`` is the project's picture of GAR; a picture drawn by the same
hands as the proxy tends to agree with it. This twin reads the same sources
(``docs/GAR.md``) independently and makes every behaviour the record leaves open a
knob (:class:`~testkit.fakes.gar_twin_wire.Knobs`), so a test can try each plausible
answer. It plays one location at the root of its own host, as ``LOC-docker.pkg.dev``
does, with a second host for storage-style signed downloads::

    twin = GarTwin(Knobs(upload_location="absolute"), access_tokens={"ya29.x"})
    twin.add_repository("proj/repo")
    with twin.serve():
        twin.put_image("proj/repo/app", "v1", image)
        ...                                   # the proxy's upstream.url = twin.url
    twin.count("PATCH", "session"), twin.writes, twin.opaques()
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from testkit.fakes.gar_twin_content import ContentMixin
from testkit.fakes.gar_twin_sessions import Session, SessionsMixin
from testkit.fakes.gar_twin_wire import (
    Grant,
    Knobs,
    Store,
    fault_body,
    oci_error,
    repository_of,
    respond,
)
from testkit.servers import ThreadedServer

NAME = r"(?P<name>[a-z0-9._/-]+?)"
ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("ping", re.compile(r"^/v2/$")),
    ("token", re.compile(r"^/v2/token$")),
    ("session", re.compile(r"^/v2/(?P<p>[^/]+)/(?P<r>[^/]+)/pkg/blobs/uploads/(?P<opaque>[^/]+)$")),
    (
        "session",
        re.compile(
            r"^/artifacts-uploads/namespaces/(?P<p>[^/]+)/repositories/"
            r"(?P<r>[^/]+)/uploads(?:/(?P<opaque>[^/]+))?$"
        ),
    ),
    (
        "download",
        re.compile(
            r"^/artifacts-downloads/namespaces/[^/]+/repositories/[^/]+/"
            r"downloads/(?P<sig>[^/]+)$"
        ),
    ),
    ("upload", re.compile(rf"^/v2/{NAME}/blobs/uploads/$")),
    ("blob", re.compile(rf"^/v2/{NAME}/blobs/(?P<digest>sha256:[0-9a-f]{{64}})$")),
    ("manifest", re.compile(rf"^/v2/{NAME}/manifests/(?P<ref>[^/]+)$")),
    ("tags", re.compile(rf"^/v2/{NAME}/tags/list$")),
]
STORAGE_ROUTES = [("storage", re.compile(r"^/storage/twin-bucket/(?P<sig>[^/]+)$"))]


@dataclass
class Fault:
    kind: str
    status: int
    method: str | None = None
    body: str = "oci"
    headers: tuple[tuple[str, str], ...] = ()
    times: int = 1
    cut_after: int | None = None  # answer as usual, then end the connection after N bytes


@dataclass(frozen=True)
class Seen:
    method: str
    kind: str
    auth: bool
    status: int


class GarTwin(SessionsMixin, ContentMixin):
    def __init__(
        self,
        knobs: Knobs | None = None,
        *,
        access_tokens: set[str] | frozenset[str] | Callable[[str], bool] = frozenset(),
    ) -> None:
        self.knobs = knobs or Knobs()
        self._valid: Callable[[str], bool] = (
            access_tokens if callable(access_tokens) else access_tokens.__contains__
        )
        self.store = Store()
        self.grants: dict[str, Grant] = {}
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.issued: list[str] = []  # every opaque string handed out: leak greps
        self.download_auth: list[bool] = []
        self.ranges_asked: list[str] = []
        self.sessions: dict[str, Session] = {}
        self.downloads: dict[str, tuple[str, str]] = {}  # signature -> (repository, digest)
        self.writes: list[int] = []  # writes per committed upload, monolithic POST = 1
        self.url = ""
        self.storage_url = ""

    # ------------------------------------------------------------------ set-up

    def add_repository(self, repository: str) -> None:
        self.store.repositories.add(repository)
        self.store.blobs.setdefault(repository, {})

    def fail(self, kind: str, status: int, **fields: Any) -> Fault:
        fault = Fault(kind, status, **fields)
        self.faults.append(fault)
        return fault

    def count(self, method: str, kind: str) -> int:
        return sum(1 for s in self.seen if s.method == method and s.kind == kind)

    def opaques(self) -> list[str]:
        return list(self.issued)

    def new_opaque(self, size: int = 300) -> str:
        opaque = secrets.token_urlsafe(size)
        self.issued.append(opaque)
        return opaque

    @contextlib.contextmanager
    def serve(self) -> Iterator[GarTwin]:
        main = ThreadedServer(self, lifespan="off", interface="asgi3").start()
        storage = ThreadedServer(self.storage_app, lifespan="off", interface="asgi3").start()
        self.url, self.storage_url = main.url, storage.url
        try:
            yield self
        finally:
            main.stop()
            storage.stop()

    # ------------------------------------------------------------------ dispatch

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._serve(ROUTES, scope, receive, send)

    async def storage_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The other host of ``download_location="storage"``: GCS-style signed URLs."""
        await self._serve(STORAGE_ROUTES, scope, receive, send)

    async def _serve(
        self, routes: list[tuple[str, re.Pattern[str]]], scope: dict[str, Any], receive: Any,
        send: Any,
    ) -> None:  # fmt: skip
        request = Request(scope, receive)
        kind, match = "other", None
        for name, pattern in routes:
            if match := pattern.match(request.url.path):
                kind = name
                break
        recording, status = _recording(send, close=self.knobs.close_connections)
        try:
            await self._handle(request, kind, match, recording)
        finally:  # a request cut short (``Fault.cut_after``) is seen too
            auth = "authorization" in request.headers
            self.seen.append(Seen(request.method, kind, auth, status[0]))

    async def _handle(self, request: Request, kind: str, match: Any, send: Any) -> None:
        if match is None:
            await respond(send, 404, [("content-type", "text/html")], b"<p>Not Found</p>")
        elif fault := self._take_fault(kind, request.method):
            if fault.cut_after is not None:
                await self.route(kind, match.groupdict(), request, _cutting(send, fault.cut_after))
                return
            body, content_type = fault_body(fault.body, fault.status)
            await self._drain(request)
            await respond(
                send, fault.status, [("content-type", content_type), *fault.headers], body
            )
        else:
            await self.route(kind, match.groupdict(), request, send)

    def _take_fault(self, kind: str, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.kind == kind and fault.method in (None, method) and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    async def _drain(self, request: Request) -> None:
        async for _ in request.stream():
            pass

    async def route(self, kind: str, groups: dict[str, Any], request: Request, send: Any) -> None:
        if kind == "token":
            await self.token(request, send)
        elif kind == "download" or (
            kind == "storage" and "X-Goog-Signature" in request.query_params
        ):
            await self.download(groups["sig"], request, send)
        elif kind == "storage":
            await respond(send, 403, [("content-type", "text/plain")], b"no signature")
        elif kind == "session":
            await self.session(groups.get("opaque"), request, send)
        elif kind == "ping":
            if await self.authorize(request, send, None, "pull"):
                await respond(send, 200, [("content-type", "application/json")], b"{}")
        else:
            name = groups["name"]
            action = "pull" if request.method in ("GET", "HEAD") else "push"
            if not await self.authorize(request, send, name, action):
                return
            if repository_of(name) not in self.store.repositories:
                await self._drain(request)
                repo = repository_of(name).split("/")[-1]
                body = oci_error("NAME_UNKNOWN", f'Repository "{repo}" not found')
                await respond(send, 404, [("content-type", "application/json")], body)
                return
            await getattr(self, kind)(name, groups, request, send)


class CutShort(Exception):
    """Raised to end a connection mid-body (uvicorn then closes it)."""


def _cutting(send: Any, after: int) -> Any:
    """``send`` that lets ``after`` body bytes through, then ends the connection."""
    sent = [0]

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            room = after - sent[0]
            body = message.get("body", b"")
            if len(body) >= room:
                await send({**message, "body": body[:room], "more_body": True})
                raise CutShort
            sent[0] += len(body)
        await send(message)

    return wrapped


def _recording(send: Any, *, close: bool = False) -> tuple[Any, list[int]]:
    """``send`` that notes the status it sends (in the returned one-item list);
    ``close``: every answer ends its connection (``Connection: close``)."""
    status = [0]

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
            if close:
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
        await send(message)

    return wrapped, status
