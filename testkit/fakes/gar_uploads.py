"""Blob uploads on the fake GAR, as the distribution spec and GAR do them.

``UploadsMixin`` starts uploads (monolithic with ``digest``, cross-repository mounts
within one location and project, or a session), takes chunks in order with
``Content-Range``, reports and cancels sessions, and finishes with the digest check;
``upload_state_query`` adds the ``_state`` parameter some registries require.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

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


class UploadsMixin:
    """Upload session routes; part of ``FakeGAR``."""

    # Provided by FakeGAR and its other mixins.
    upload_state_query: bool
    upload_chunk_min_length: int | None
    _blobs: dict[str, Buffer]
    _images: dict[tuple[str, str], _ImageRepo]
    _uploads: dict[str, _Upload]
    _lock: threading.RLock
    _repo: Callable[..., _ImageRepo]
    _link_blob: Callable[[str, str, str, Buffer], None]
    _url: Callable[[Request, str], str]

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
        try:
            async for chunk in request.stream():
                upload.data += chunk
        except ClientDisconnect:  # like a registry: keep what arrived, answer nobody
            raise _ApiError(400, "BLOB_UPLOAD_INVALID", "client went away mid-chunk") from None
        received = len(upload.data) - before
        if expected is not None and received not in (0, expected):
            del upload.data[before:]
            raise _ApiError(
                416,
                "BLOB_UPLOAD_INVALID",
                "chunk length does not match Content-Range",
                {**self._upload_headers(request, upload)},
            )
