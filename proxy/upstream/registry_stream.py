"""Upstream bodies as the services receive them: a blob's or a manifest's, streamed.

``BlobStream`` wraps an httpx response whose status was already judged by the typed
client (``proxy.upstream.registry``); a connection cut mid-body becomes an upstream
``RegistryError`` named by what was asked for, never by a signed redirect target.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from proxy.upstream import errors, lean
from proxy.upstream.calls import ASKED


class BlobStream:
    """An upstream body being received: its size when known, its bytes, ``aclose``.

    ``size`` is None when upstream did not say (chunked) or encoded the body
    (``Content-Encoding``): then the bytes counted are the decoded ones. A connection
    cut mid-body is an upstream error, never an internal one.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        length = response.headers.get("content-length", "")
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        self.size = int(length) if length.isdigit() and not encoded else None

    @property
    def media_type(self) -> str:
        return str(self._response.headers.get("content-type", "")).split(";")[0].strip()

    def header(self, name: str) -> str | None:
        value = self._response.headers.get(name)
        return str(value) if value is not None else None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as error:  # named as asked: a redirect's target is signed
            where = self._response.extensions.get(ASKED) or str(self._response.request.url)
            raise errors.from_transport(error, where) from None

    def recycle(self, piece: bytes) -> None:
        """``piece`` (one this stream yielded) was written and hashed and is read no
        more: the lean path reuses its memory for the next batch."""
        body = self._response.extensions.get(lean.BODY)
        if isinstance(body, lean.DirectBody) and isinstance(piece, memoryview):
            body.recycle(piece)

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or None (and closed) if it is larger than ``limit``."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                await self.aclose()
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._response.aclose()


class ManifestStream(BlobStream):
    """A manifest GET's body, with the digest and media type upstream announced."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response)
        self.digest = header_digest(response.headers)

    @property
    def media_type(self) -> str:
        return super().media_type or mt.OCI_MANIFEST


def header_digest(headers: Mapping[str, str]) -> Digest | None:
    header = headers.get("docker-content-digest")
    try:
        return Digest.parse(header) if header else None
    except RegistryError:
        return None


async def error_body(response: httpx.Response) -> bytes:
    """The start of an error answer (enough for its OCI message); the rest is dropped."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= errors.ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass  # the status says enough
    return b"".join(chunks)[: errors.ERROR_BODY_LIMIT]
