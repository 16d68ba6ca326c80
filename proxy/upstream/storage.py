"""Cloud Storage objects over the JSON API, for the shared blob tier (``cache.shared``).

Two calls: read an object as a stream, write one from a file (streamed, with its
length, never whole in memory)::

    bucket = StorageBucket(http, tokens, "https://storage.googleapis.com", "team-cache")
    stream = await bucket.open("gar-proxy/sha256/ab12...")   # None: no such object
    await bucket.upload("gar-proxy/sha256/ab12...", path)

Credentials are GAR's: the same token source (``upstream.auth = "gcp"``), the
read-only scope for reads when ``gcp.read_only`` asks for it, the full one for writes.
With no token source (another upstream auth; a test against an emulator) requests go
without an Authorization header. Failures are ``RegistryError``s like any upstream
answer; the token never reaches one (it is only ever in a request header).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import httpx

from proxy.upstream import errors
from proxy.upstream.auth import AccessTokens
from proxy.upstream.registry import BlobStream, error_body  # an object body is read as a blob body

UPLOAD_READ_SIZE = 1024 * 1024


class StorageBucket:
    def __init__(
        self, http: httpx.AsyncClient, tokens: AccessTokens | None, api_url: str, bucket: str
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._base = api_url.rstrip("/")
        self.bucket = bucket

    def _object_url(self, name: str) -> str:
        return f"{self._base}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"

    async def _authorization(self, *, wide: bool, stale: str | None) -> dict[str, str]:
        if self._tokens is None:
            return {}
        if stale is None:
            token = await self._tokens.token(wide=wide)
        else:
            token = await self._tokens.refresh(stale, wide=wide)
        return {"Authorization": f"Bearer {token}"}

    async def _send(self, build: Callable[[], httpx.Request], *, wide: bool) -> httpx.Response:
        """Sent with a token; once more with a fresh one if Google says it went stale."""
        stale: str | None = None
        while True:
            request = build()
            headers = await self._authorization(wide=wide, stale=stale)
            request.headers.update(headers)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.HTTPError as error:
                raise errors.from_transport(error, str(request.url)) from None
            if response.status_code != 401 or not headers or stale is not None:
                return response
            await response.aclose()
            stale = headers["Authorization"].removeprefix("Bearer ")

    async def open(self, name: str) -> BlobStream | None:
        """The object's bytes as they arrive; None when there is no such object."""
        url = self._object_url(name)
        response = await self._send(
            lambda: self._http.build_request("GET", url, params={"alt": "media"}), wide=False
        )
        if response.status_code == 200:
            return BlobStream(response)
        body = await _drained(response)
        if response.status_code == 404:
            return None
        raise errors.from_status(response.status_code, response.headers, body)

    async def upload(self, name: str, path: Path) -> None:
        """Write the object ``name`` from the file at ``path`` (replacing any), streamed."""
        url = f"{self._base}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        with path.open("rb") as file:
            fd = file.fileno()
            size = os.fstat(fd).st_size

            def build() -> httpx.Request:
                return self._http.build_request(
                    "POST",
                    url,
                    params={"uploadType": "media", "name": name},
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    content=_read_from(fd, size),
                )

            response = await self._send(build, wide=True)
            body = await _drained(response)
        if response.status_code != 200:
            raise errors.from_status(response.status_code, response.headers, body)


async def _drained(response: httpx.Response) -> bytes:
    """The first bytes of an answer's body (an error's message); the answer closed."""
    try:
        return await error_body(response)
    finally:
        await response.aclose()


async def _read_from(fd: int, size: int) -> AsyncIterator[bytes]:
    """The file's bytes in 1 MiB reads; ``pread`` from 0, so a retry can read it again."""
    offset = 0
    while offset < size:
        piece = await asyncio.to_thread(os.pread, fd, min(UPLOAD_READ_SIZE, size - offset), offset)
        if not piece:
            raise OSError(f"cache file shrank to {offset} of {size} bytes while uploading")
        offset += len(piece)
        yield piece
