"""A plain OCI registry's upload sessions on the fake GAR (``plain_uploads=True``).

Sessions under ``/v2/<name>/blobs/uploads/<id>`` that take chunks in order with
``Content-Range``, report their progress and, with ``upload_state_query``, carry a
``_state`` query parameter that changes with every answer: what the CNCF registry does,
for tests about a registry other than GAR (GAR's own are ``gar_uploads``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from testkit.fakes.gar_model import (
    _CONTENT_RANGE,
    Buffer,
    _ApiError,
    _range_header,
    _Route,
    _Upload,
)


class PlainUploadsMixin:
    """Plain chunked sessions; part of ``FakeGAR`` through ``UploadsMixin``."""

    # Provided by FakeGAR and its other mixins.
    upload_state_query: bool
    committed: dict[str, str]
    _uploads: dict[str, _Upload]
    _lock: threading.RLock
    _url: Callable[[Request, str], str]
    _record: Callable[[str, str, int, bool], None]
    _finish: Callable[[Request, _Route, Buffer, str], Awaitable[Response]]

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

    async def _plain_session(self, request: Request, route: _Route) -> Response:
        upload = self._plain(request, route)
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
        digest = request.query_params.get("digest", "")
        with self._lock:
            self._uploads.pop(upload.id, None)
        response = await self._finish(request, route, upload.data, digest)
        with self._lock:
            self.committed[upload.id] = digest
        return response

    def _plain(self, request: Request, route: _Route) -> _Upload:
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
                headers = self._upload_headers(request, upload)
                raise _ApiError(416, "BLOB_UPLOAD_INVALID", "chunk out of order", headers)
            expected = int(match[2]) - int(match[1]) + 1
        before = len(upload.data)
        try:
            async for chunk in request.stream():
                upload.data += chunk
        except ClientDisconnect:  # like a registry: keep what arrived, answer nobody
            raise _ApiError(400, "BLOB_UPLOAD_INVALID", "client went away mid-chunk") from None
        received = len(upload.data) - before
        if received:
            self._record(upload.id, request.method, received, True)
        if expected is not None and received not in (0, expected):
            del upload.data[before:]
            headers = self._upload_headers(request, upload)
            raise _ApiError(416, "BLOB_UPLOAD_INVALID", "chunk length does not match", headers)
