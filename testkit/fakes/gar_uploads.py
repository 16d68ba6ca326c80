"""Blob uploads on the fake GAR: GAR's sessions by default, a plain OCI registry's on demand.

GAR's way (docs/GAR.md, "Registry API: uploads and downloads", rows U1-U11):

- ``POST /v2/<name>/blobs/uploads/`` answers 202 with a relative ``Location`` outside
  ``/v2/<name>/``: ``/artifacts-uploads/namespaces/P/repositories/R/uploads/<opaque>``
  (``upload_session_form = "artifacts-uploads"``, the default) or
  ``/v2/P/R/pkg/blobs/uploads/<opaque>`` (``"pkg"``, U2), on the same host (U1). The opaque part
  is long and random, and it is the credential: requests to it are taken with or
  without ``Authorization``. The fake keeps the session (its location, image name,
  bytes) by that opaque string; nothing about it is readable from the path.
- A session takes ONE write (no chunked uploads): the whole blob in one ``PATCH``
  then a ``PUT ?digest=`` without a body, or the whole blob in the ``PUT``. A second
  write (a second ``PATCH``, or a ``PATCH`` then a ``PUT`` with a body) is refused with
  ``second_write_status`` (what GAR answers is unknown; 400 ``BLOB_UPLOAD_INVALID`` by
  default, and tests try others). A write cut mid-body breaks the session.
- Every write is counted (``upload_writes``, ``writes()``), so tests can assert that a
  blob reached GAR in one write. ``expire_upload_sessions()`` makes the open sessions
  unknown (404), as an expired one would be; ``cut_next_write(after=N)`` resets the
  connection of the next write that reaches N bytes (upstream failing mid-write).

``plain_uploads=True`` keeps a plain OCI registry's sessions under ``/v2/<name>/``:
chunks in order with ``Content-Range``, progress, ``_state`` (``upload_state_query``).
Mounts work the same in both: within one location and project.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from testkit.fakes.gar_faults import _Cut, _cut
from testkit.fakes.gar_model import (
    _CONTENT_RANGE,
    _DIGEST,
    Buffer,
    _ApiError,
    _ImageRepo,
    _range_header,
    _Route,
    _sha,
    _Upload,
)
from testkit.fakes.gar_plain_uploads import PlainUploadsMixin

SIGNED_UPLOADS = "/artifacts-uploads/namespaces/"
WHOLE, GONE, CUT = "whole", "gone", "cut"  # how a write's body ended
OPAQUE_BYTES = 480  # 640 characters, as long as GAR's (oras#532's transcript)


@dataclass(frozen=True)
class UploadWrite:
    """A request that carried bytes into an upload session."""

    session: str  # the session's opaque string (plain mode: its id)
    method: str
    size: int  # bytes received
    accepted: bool  # False: refused (a second write, or cut off mid-body)


@dataclass
class UploadSession:
    opaque: str
    location: str
    name: str  # the image the POST named
    data: bytearray = field(default_factory=bytearray)
    writes: int = 0
    broken: bool = False  # a write was cut off mid-body
    expired: bool = False


class UploadsMixin(PlainUploadsMixin):
    """Upload session routes; part of ``FakeGAR``."""

    # Provided by FakeGAR and its other mixins.
    plain_uploads: bool
    upload_state_query: bool
    upload_chunk_min_length: int | None
    _blobs: dict[str, Buffer]
    _images: dict[tuple[str, str], _ImageRepo]
    _uploads: dict[str, _Upload]
    _lock: threading.RLock
    _repo: Callable[..., _ImageRepo]
    _link_blob: Callable[[str, str, str, Buffer], None]
    _url: Callable[[Request, str], str]

    def _init_uploads(self) -> None:
        self.upload_session_form: Literal["artifacts-uploads", "pkg"] = "artifacts-uploads"
        self.second_write_status = 400
        self.mounts_refused = False  # every mount answered 202, as GAR may (evidence: none)
        self.upload_session_host: str | None = None  # hand sessions out on this origin
        self.upload_writes: list[UploadWrite] = []
        self.committed: dict[str, str] = {}  # session -> the digest it stored
        self._sessions: dict[str, UploadSession] = {}
        self._handed_out: list[str] = []
        self._cuts: list[int] = []  # cut_next_write: bytes to take before each cut
        self.write_started = threading.Event()  # set by every write's first bytes

    # ------------------------------------------------------------ what tests read

    def writes(self, digest: str | None = None) -> int:
        """Writes into upload sessions since the last ``reset_counts`` (refused ones too);
        with ``digest``, those into the session that stored it."""
        with self._lock:
            if digest is None:
                return len(self.upload_writes)
            sessions = {s for s, d in self.committed.items() if d == digest}
            return sum(1 for w in self.upload_writes if w.session in sessions)

    def upload_opaques(self) -> list[str]:
        """Every session's opaque string handed out (the secrets a test greps for)."""
        with self._lock:
            return list(self._handed_out)

    def expire_upload_sessions(self) -> int:
        """The open sessions are gone, as after GAR's (unknown) lifetime; returns how many."""
        with self._lock:
            for session in self._sessions.values():
                session.expired = True
            return len(self._sessions)

    def cut_next_write(self, after: int, times: int = 1) -> None:
        """The next ``times`` writes that reach ``after`` bytes are cut off there
        (connection reset); smaller ones pass."""
        with self._lock:
            self._cuts.extend([after] * times)

    def _reset_uploads(self) -> None:
        with self._lock:
            self.upload_writes.clear()

    def _signed_upload_route(self, path: str) -> _Route | None:
        """The session an ``/artifacts-uploads/...`` path names (any location)."""
        if not path.startswith(SIGNED_UPLOADS):
            return None
        opaque = path.rsplit("/", 1)[-1]
        with self._lock:
            session = self._sessions.get(opaque)
        if session is None:
            return _Route("upload", None, "", opaque)
        return _Route("upload", session.location, session.name, opaque)

    # ------------------------------------------------------------ dispatch

    async def _upload(self, request: Request, route: _Route) -> Response:
        if route.ref == "":
            if request.method != "POST":
                raise _ApiError(405, "UNSUPPORTED", f"{request.method} on the uploads endpoint")
            return await self._start_upload(request, route)
        if self.plain_uploads:
            return await self._plain_session(request, route)
        return await self._gar_session(request, route)

    async def _start_upload(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        self._repo(route.location, route.name, create=True)
        params = request.query_params
        mount, source = params.get("mount"), params.get("from")
        if mount and source and self._can_mount(route, mount, source):
            self._link_blob(route.location, route.name, mount, self._blobs[mount])
            return self._blob_created(request, route, mount)
        if params.get("digest") and not mount:
            key = "post-" + uuid.uuid4().hex
            data, ending = await self._take_body(request)
            self._record(key, "POST", len(data), ending == WHOLE)
            await self._cut_if(request, ending)
            response = await self._finish(request, route, data, params["digest"])
            with self._lock:
                self.committed[key] = params["digest"]
            return response
        headers = self._open_session(request, route)
        if self.upload_chunk_min_length is not None:
            headers["OCI-Chunk-Min-Length"] = str(self.upload_chunk_min_length)
        return Response(status_code=202, headers=headers)

    def _open_session(self, request: Request, route: _Route) -> dict[str, str]:
        assert route.location is not None
        if self.plain_uploads:
            upload = _Upload(uuid.uuid4().hex, route.location, route.name)
            with self._lock:
                self._uploads[upload.id] = upload
            return self._upload_headers(request, upload)
        opaque = secrets.token_urlsafe(OPAQUE_BYTES)
        with self._lock:
            self._sessions[opaque] = UploadSession(opaque, route.location, route.name)
            self._handed_out.append(opaque)
        path = self._session_path(route, opaque)
        if self.upload_session_host is not None:
            return {"Location": self.upload_session_host + path}
        return {"Location": self._url(request, path)}

    def _session_path(self, route: _Route, opaque: str) -> str:
        project, repository = route.name.split("/")[:2]
        if self.upload_session_form == "pkg":
            return f"/{route.location}/v2/{project}/{repository}/pkg/blobs/uploads/{opaque}"
        return f"{SIGNED_UPLOADS}{project}/repositories/{repository}/uploads/{opaque}"

    # ------------------------------------------------------------ GAR's sessions

    async def _gar_session(self, request: Request, route: _Route) -> Response:
        with self._lock:
            session = self._sessions.get(route.ref)
        if session is None or session.expired:
            raise _ApiError(404, "BLOB_UPLOAD_UNKNOWN", "upload session not found")
        if request.method == "GET":
            return Response(status_code=204, headers={"Range": _range_header(len(session.data))})
        if request.method == "DELETE":
            with self._lock:
                self._sessions.pop(session.opaque, None)
            return Response(status_code=204)
        if request.method not in ("PATCH", "PUT"):
            raise _ApiError(405, "UNSUPPORTED", f"{request.method} on an upload")
        await self._one_write(request, session)
        if request.method == "PATCH":
            headers = {
                "Location": self._url(request, request.url.path),
                "Range": _range_header(len(session.data)),
            }
            return Response(status_code=202, headers=headers)
        if session.broken:
            raise _ApiError(400, "BLOB_UPLOAD_INVALID", "the upload's write was cut off")
        digest = request.query_params.get("digest", "")
        with self._lock:
            self._sessions.pop(session.opaque, None)
        route = _Route("upload", session.location, session.name, session.opaque)
        response = await self._finish(request, route, session.data, digest)
        with self._lock:
            self.committed[session.opaque] = digest
        return response

    async def _one_write(self, request: Request, session: UploadSession) -> None:
        """The body of a PATCH or PUT: the session's one write, or a refused second."""
        content_range = request.headers.get("content-range")
        if content_range:
            match = _CONTENT_RANGE.fullmatch(content_range.strip())
            if match is None or int(match[1]) != 0:
                raise _ApiError(416, "BLOB_UPLOAD_INVALID", "chunked uploads are not supported")
        data, ending = await self._take_body(request)
        if not data and ending == WHOLE:
            return  # no bytes: not a write (the PUT after a PATCH)
        first = session.writes == 0
        with self._lock:
            session.writes += 1
        self._record(session.opaque, request.method, len(data), ending == WHOLE and first)
        if not first:
            status = self.second_write_status
            raise _ApiError(status, "BLOB_UPLOAD_INVALID", "the upload session was written to")
        session.data += data
        if ending != WHOLE:
            session.broken = True
        await self._cut_if(request, ending)

    async def _take_body(self, request: Request) -> tuple[bytearray, str]:
        """The body, and how it ended: ``WHOLE``, ``GONE`` (the proxy left) or ``CUT``
        (``cut_next_write``: the caller records the write, then cuts the connection)."""
        data = bytearray()
        try:
            async for chunk in request.stream():
                if chunk and not data:
                    self.write_started.set()
                data += chunk
                with self._lock:
                    cut = self._cuts.pop(0) if self._cuts and len(data) >= self._cuts[0] else None
                if cut is not None:
                    del data[cut:]
                    return data, CUT
        except ClientDisconnect:
            return data, GONE
        return data, WHOLE

    async def _cut_if(self, request: Request, ending: str) -> None:
        """Reset the connection of a write ``cut_next_write`` picked; raise ``_Cut`` for
        any write that did not arrive whole (nobody is there to read an answer)."""
        if ending == CUT:
            await _cut(request.scope["gar_fake.send"], reset=True)
        if ending != WHOLE:
            raise _Cut

    def _record(self, session: str, method: str, size: int, accepted: bool) -> None:
        with self._lock:
            self.upload_writes.append(UploadWrite(session, method, size, accepted))

    # ------------------------------------------------------------ shared

    def _blob_created(self, request: Request, route: _Route, digest: str) -> Response:
        location = self._url(request, f"/{route.location}/v2/{route.name}/blobs/{digest}")
        headers = {"Location": location, "Docker-Content-Digest": digest}
        return Response(status_code=201, headers=headers)

    async def _finish(self, request: Request, route: _Route, data: Buffer, digest: str) -> Response:
        if not _DIGEST.fullmatch(digest):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
        if _sha(data, digest.split(":")[0]) != digest:
            raise _ApiError(400, "DIGEST_INVALID", "uploaded content does not match digest")
        self._link_blob(route.location or "", route.name, digest, bytes(data))
        return self._blob_created(request, route, digest)

    def _can_mount(self, route: _Route, digest: str, source: str) -> bool:
        """GAR mounts only within one location and project; elsewhere it starts an upload."""
        assert route.location is not None
        if self.mounts_refused or source.split("/")[0] != route.name.split("/")[0]:
            return False
        with self._lock:
            image_repo = self._images.get((route.location, source))
            return image_repo is not None and digest in image_repo.blobs
