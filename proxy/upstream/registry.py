"""A typed client for the upstream registry's API: what services call instead of HTTP.

The shape of distribution's ``internal/client/repository.go``: one method per
operation of the OCI distribution API, typed results ("unknown" is ``None`` where a
miss is an ordinary answer), and every other upstream answer translated into a
``RegistryError`` here, once. The success set of each operation lives in its method;
nothing above this module reads a status code or imports httpx::

    info = await registry.stat_blob(repo, digest)            # BlobInfo | None
    stream = await registry.open_blob(repo, digest)          # BlobStream, or BLOB_UNKNOWN
    try:
        async for chunk in stream: ...
    finally:
        await stream.aclose()

Upload sessions are named by upstream's own absolute URL, opaque (``registry_uploads``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.upstream import errors
from proxy.upstream.client import Upstream
from proxy.upstream.registry_pages import NextPages
from proxy.upstream.registry_stream import BlobStream, ManifestStream, error_body, header_digest
from proxy.upstream.registry_uploads import Body, UploadCalls, UploadProgress
from proxy.upstream.resumable import ResumingBlobStream

__all__ = [
    "BlobInfo",
    "BlobStream",
    "Body",
    "Document",
    "ManifestInfo",
    "PutManifest",
    "Registry",
    "RegistryClient",
    "UploadProgress",
    "error_body",
]  # fmt: skip


@dataclass(frozen=True)
class BlobInfo:
    size: int | None


@dataclass(frozen=True)
class ManifestInfo:
    digest: Digest | None  # upstream's Docker-Content-Digest, when it sent a valid one
    media_type: str
    size: int | None


@dataclass(frozen=True)
class Document:
    """A small JSON answer (a tag list, a referrers index) with the headers that matter."""

    media_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # link, oci-filters-applied


@dataclass(frozen=True)
class PutManifest:
    digest: Digest | None  # what upstream says it stored
    subject: str | None  # upstream's OCI-Subject


class Stream(Protocol):
    """A body being received: ``size`` when known, the bytes, ``read``, ``aclose``."""

    size: int | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int) -> bytes | None: ...

    async def aclose(self) -> None: ...


class ManifestBody(Stream, Protocol):
    digest: Digest | None

    @property
    def media_type(self) -> str: ...


class Registry(Protocol):
    """The registry API the services use; ``RegistryClient`` speaks it to upstream,
    ``testkit.memregistry.MemoryRegistry`` in memory (service unit tests)."""

    async def stat_blob(self, repo: Repository, digest: Digest) -> BlobInfo | None: ...

    async def open_blob(self, repo: Repository, digest: Digest) -> Stream: ...

    async def head_manifest(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...]
    ) -> ManifestInfo | None: ...

    async def get_manifest(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...]
    ) -> ManifestBody: ...

    async def put_manifest(
        self, repo: Repository, reference: str | Digest, media_type: str, body: bytes
    ) -> PutManifest: ...

    async def delete_manifest(self, repo: Repository, reference: str | Digest) -> bool: ...

    async def tags(self, repo: Repository, params: Mapping[str, str], limit: int) -> Document: ...

    async def referrers(
        self, repo: Repository, digest: Digest, params: Mapping[str, str], limit: int
    ) -> Document: ...

    async def start_upload(self, repo: Repository) -> UploadProgress: ...

    async def mount(
        self, repo: Repository, digest: Digest, source: Repository | None
    ) -> UploadProgress | None: ...

    async def write_upload(
        self, repo: Repository, url: str, body: Body, length: int | None
    ) -> UploadProgress: ...

    async def commit_upload(
        self, repo: Repository, url: str, digest: Digest, body: Body, length: int | None
    ) -> Digest | None: ...

    async def cancel_upload(self, repo: Repository, url: str) -> None: ...


class ListingTooLarge(RegistryError):
    """A tag list or referrers index over the size the caller can hold."""

    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.UPSTREAM_BAD_GATEWAY, f"upstream listing is over {limit} bytes")


def _accept(accept: tuple[str, ...]) -> dict[str, str]:
    return {"Accept": ", ".join(accept)} if accept else {}


class RegistryClient(UploadCalls):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._next_pages = NextPages()

    async def _fail(
        self, response: httpx.Response, not_found: ErrorCode = ErrorCode.NAME_UNKNOWN
    ) -> RegistryError:
        """Translate an unwanted answer, reading (a bounded start of) its body first."""
        body = b""
        if response.request.method != "HEAD":
            body = await error_body(response)
        await response.aclose()
        error = errors.from_response(response, body, not_found=not_found)
        hint = self.upstream.auth.explain()
        if error.code is ErrorCode.CREDENTIALS_REJECTED and hint:  # a lower tier's own
            return RegistryError(error.code, f"{error.message} (sent {hint})", detail=error.detail)
        return error

    # --- blobs -----------------------------------------------------------------------------

    async def stat_blob(self, repo: Repository, digest: Digest) -> BlobInfo | None:
        response = await self.upstream.send("HEAD", repo, f"/blobs/{digest}")
        if response.status_code == 200:
            length = response.headers.get("content-length", "")
            return BlobInfo(int(length) if length.isdigit() else None)
        if response.status_code == 404:
            return None
        raise await self._fail(response, ErrorCode.BLOB_UNKNOWN)

    async def open_blob(self, repo: Repository, digest: Digest) -> BlobStream:
        """The blob's body; a connection cut mid-body is picked up (``resumable``)."""
        response = await self.upstream.send(
            "GET", repo, f"/blobs/{digest}", stream=True, lean_body=True
        )
        if response.status_code != 200:
            raise await self._fail(response, ErrorCode.BLOB_UNKNOWN)

        async def reopen(start: int) -> httpx.Response:  # a cut body, asked for again
            ranged = {"Range": f"bytes={start}-"}
            return await self.upstream.send(
                "GET", repo, f"/blobs/{digest}", headers=ranged, stream=True, lean_body=True
            )

        return ResumingBlobStream(response, reopen)

    # --- manifests -------------------------------------------------------------------------

    async def head_manifest(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...]
    ) -> ManifestInfo | None:
        response = await self.upstream.send(
            "HEAD", repo, f"/manifests/{reference}", headers=_accept(accept)
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._fail(response, ErrorCode.MANIFEST_UNKNOWN)
        length = response.headers.get("content-length", "")
        media_type = str(response.headers.get("content-type", "")).split(";")[0].strip()
        return ManifestInfo(
            header_digest(response.headers),
            media_type or mt.OCI_MANIFEST,
            int(length) if length.isdigit() else None,
        )

    async def get_manifest(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...]
    ) -> ManifestStream:
        response = await self.upstream.send(
            "GET", repo, f"/manifests/{reference}", headers=_accept(accept), stream=True
        )
        if response.status_code != 200:
            raise await self._fail(response, ErrorCode.MANIFEST_UNKNOWN)
        return ManifestStream(response)

    async def put_manifest(
        self, repo: Repository, reference: str | Digest, media_type: str, body: bytes
    ) -> PutManifest:
        response = await self.upstream.send(
            "PUT", repo, f"/manifests/{reference}",
            headers={"Content-Type": media_type}, content=body, write=True,
        )  # fmt: skip
        if response.status_code not in (200, 201, 202):
            raise await self._fail(response)
        return PutManifest(header_digest(response.headers), response.headers.get("oci-subject"))

    async def delete_manifest(self, repo: Repository, reference: str | Digest) -> bool:
        """True when upstream deleted it, False when it did not have it."""
        response = await self.upstream.send("DELETE", repo, f"/manifests/{reference}", write=True)
        if response.status_code in (200, 202, 204):
            return True
        if response.status_code == 404:
            await response.aclose()
            return False
        raise await self._fail(response, ErrorCode.MANIFEST_UNKNOWN)

    # --- listings --------------------------------------------------------------------------

    async def tags(self, repo: Repository, params: Mapping[str, str], limit: int) -> Document:
        return await self._document(repo, "/tags/list", params, limit)

    async def referrers(
        self, repo: Repository, digest: Digest, params: Mapping[str, str], limit: int
    ) -> Document:
        """The index; its ``link``, if any, is upstream's next page as a ``cursor_link``
        (its query, for the same path): one to anywhere else is dropped."""
        return await self._document(repo, f"/referrers/{digest}", params, limit, cursor=True)

    async def _document(
        self,
        repo: Repository,
        path: str,
        params: Mapping[str, str],
        limit: int,
        *,
        cursor: bool = False,
    ) -> Document:
        response = await self.upstream.send("GET", repo, path, params=params, stream=True)
        if response.status_code != 200:
            raise await self._fail(response)
        body = await BlobStream(response).read(limit)
        if body is None:
            raise ListingTooLarge(limit)
        headers = {
            name: response.headers[name]
            for name in ("link", "oci-filters-applied")
            if name in response.headers
        }
        if cursor and "link" in headers:
            self._next_pages.keep(headers, str(response.url))
        media_type = response.headers.get("content-type", "application/json").split(";")[0]
        return Document(media_type, body, headers)
