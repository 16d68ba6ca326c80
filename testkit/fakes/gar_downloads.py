"""Blob downloads on the fake GAR: a GET is sent on to a signed path on the same host.

GAR answers ``GET /v2/<name>/blobs/<digest>`` with ``302`` to a relative
``/artifacts-downloads/namespaces/P/repositories/R/downloads/<~1 KB signature>``, which
anyone may download without ``Authorization`` (ahmetb/serverless-registry-proxy#8;
docs/GAR.md D1-D5). The fake hands out such a path per GET, random, remembered with the blob
it stands for; it expires after ``download_ttl`` seconds (GAR's lifetime is unknown;
an expired one answers 403 here, GAR's answer is unknown too). A ``HEAD`` is answered
directly. Single byte ranges are served on both.

Requests to the signed path are recorded as kind ``"download"``; the body faults added
for the blob (``Fault(kind="blob", truncate_at=...)``) act on its body, as a cut there
is what a client of GAR sees. ``blob_redirects=False`` serves blob GETs directly, as a
plain OCI registry does.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from proxy.oci import mediatypes as mt
from testkit.fakes.gar_model import Buffer, _ApiError, _byte_range, _chunks, _Route

SIGNED_DOWNLOADS = "/artifacts-downloads/namespaces/"
SIGNATURE_BYTES = 800  # about 1 KB of characters, as in GAR's (serverless-registry-proxy#8)


@dataclass(frozen=True)
class Download:
    digest: str
    location: str
    name: str
    expires: float  # time.monotonic()


class DownloadsMixin:
    """Signed blob downloads; part of ``FakeGAR``."""

    # Provided by FakeGAR and its other mixins.
    chunk_size: int
    _blobs: dict[str, Buffer]
    _lock: threading.RLock

    def _init_downloads(self) -> None:
        self.download_ttl = 300.0
        self.download_host: str | None = None  # send downloads to this origin instead
        self.download_auth: list[bool] = []  # per download request: had Authorization?
        self._expire_next = 0
        self._downloads: dict[str, Download] = {}

    def download_opaques(self) -> list[str]:
        """Every signature handed out (the secrets a test greps for)."""
        with self._lock:
            return list(self._downloads)

    def expire_next_downloads(self, count: int = 1) -> None:
        """The next ``count`` signatures handed out have expired by the time they are used."""
        with self._lock:
            self._expire_next += count

    def _redirect_download(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        signature = secrets.token_urlsafe(SIGNATURE_BYTES)
        with self._lock:
            expired, self._expire_next = self._expire_next > 0, max(self._expire_next - 1, 0)
        expires = time.monotonic() + (-1.0 if expired else self.download_ttl)
        with self._lock:
            self._downloads[signature] = Download(route.ref, route.location, route.name, expires)
        project, repository = route.name.split("/")[:2]
        path = f"{SIGNED_DOWNLOADS}{project}/repositories/{repository}/downloads/{signature}"
        return Response(b"", 302, {"Location": (self.download_host or "") + path})

    def _signed_download_route(self, path: str) -> tuple[_Route, _Route, str] | None:
        """For a signed path: its route, and the blob GET it stands for (route, path),
        which the blob's body faults are matched against."""
        if not path.startswith(SIGNED_DOWNLOADS):
            return None
        signature = path.rsplit("/", 1)[-1]
        with self._lock:
            found = self._downloads.get(signature)
        if found is None:
            route = _Route("download", None, "", signature)
            return route, route, path
        route = _Route("download", found.location, found.name, signature)
        blob = _Route("blob", found.location, found.name, found.digest)
        return route, blob, f"/{found.location}/v2/{found.name}/blobs/{found.digest}"

    async def _download(self, request: Request, route: _Route) -> Response:
        with self._lock:
            found = self._downloads.get(route.ref)
            self.download_auth.append("authorization" in request.headers)
        if found is None:
            raise _ApiError(404, "BLOB_UNKNOWN", "no such download")
        if request.method not in ("GET", "HEAD"):
            raise _ApiError(405, "UNSUPPORTED", f"{request.method} on a download")
        if time.monotonic() > found.expires:
            raise _ApiError(403, "DENIED", "the download's signature has expired")
        with self._lock:
            data = self._blobs[found.digest]
        return self._blob_response(request, found.digest, data, digest_header=False)

    def _blob_response(
        self, request: Request, digest: str, data: Buffer, *, digest_header: bool = True
    ) -> Response:
        size = len(data)
        span = _byte_range(request.headers.get("range"), size)
        start, end = span or (0, size - 1)
        headers = {
            "Content-Length": str(end - start + 1 if size else 0),
            "Content-Type": mt.OCTET_STREAM,
            "Accept-Ranges": "bytes",
            "ETag": f'"{digest}"',
        }
        if digest_header:
            headers["Docker-Content-Digest"] = digest
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206 if span is not None else 200
        if request.method == "HEAD" or size == 0:
            return Response(b"", status, headers)
        return StreamingResponse(_chunks(data, start, end, self.chunk_size), status, headers)
