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

Upload sessions are named by upstream's own absolute URL (it changes after every
chunk; GAR carries state in its query), which each answer hands back.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.upstream import errors, lean
from proxy.upstream.client import Upstream

Body = bytes | AsyncIterable[bytes] | None


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
class UploadProgress:
    """Where an upstream upload session stands: its URL now, and its ``Range: 0-N``."""

    url: str
    range_last: int | None  # N, or None when upstream sent no (readable) Range
    chunk_min_length: int | None = None

    def offset(self, local: int) -> int:
        """Bytes upstream holds; "0-0" is ambiguous (none, or one), ``local`` decides."""
        if self.range_last is None:
            return local
        return min(local, 1) if self.range_last == 0 else self.range_last + 1


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

    async def patch_upload(
        self, repo: Repository, url: str, body: Body, headers: Mapping[str, str]
    ) -> UploadProgress: ...

    async def finish_upload(
        self, repo: Repository, url: str, digest: Digest, body: Body, headers: Mapping[str, str]
    ) -> Digest | None: ...

    async def upload_status(self, repo: Repository, url: str) -> UploadProgress | None: ...

    async def cancel_upload(self, repo: Repository, url: str) -> None: ...

    async def session_path(
        self, repo: Repository, url: str, params: dict[str, str] | None = None
    ) -> str: ...


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
        except httpx.HTTPError as error:
            raise errors.from_transport(error, str(self._response.request.url)) from None

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
        self.digest = _header_digest(response.headers)

    @property
    def media_type(self) -> str:
        return super().media_type or mt.OCI_MANIFEST


class ListingTooLarge(RegistryError):
    """A tag list or referrers index over the size the caller can hold."""

    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.UPSTREAM_BAD_GATEWAY, f"upstream listing is over {limit} bytes")


def _header_digest(headers: Mapping[str, str]) -> Digest | None:
    header = headers.get("docker-content-digest")
    try:
        return Digest.parse(header) if header else None
    except RegistryError:
        return None


def _accept(accept: tuple[str, ...]) -> dict[str, str]:
    return {"Accept": ", ".join(accept)} if accept else {}


class RegistryClient:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

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
        response = await self.upstream.send(
            "GET", repo, f"/blobs/{digest}", stream=True, lean_body=True
        )
        if response.status_code != 200:
            raise await self._fail(response, ErrorCode.BLOB_UNKNOWN)
        return BlobStream(response)

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
            _header_digest(response.headers),
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
        return PutManifest(_header_digest(response.headers), response.headers.get("oci-subject"))

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
        return await self._document(repo, f"/referrers/{digest}", params, limit)

    async def _document(
        self, repo: Repository, path: str, params: Mapping[str, str], limit: int
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
        media_type = response.headers.get("content-type", "application/json").split(";")[0]
        return Document(media_type, body, headers)

    # --- uploads ---------------------------------------------------------------------------

    async def start_upload(self, repo: Repository) -> UploadProgress:
        response = await self.upstream.send("POST", repo, "/blobs/uploads/", write=True)
        if response.status_code != 202:
            raise await self._fail(response)
        return self._progress(response)

    async def mount(
        self, repo: Repository, digest: Digest, source: Repository | None
    ) -> UploadProgress | None:
        """None: mounted. Otherwise upstream opened a session for an ordinary upload."""
        params = {"mount": str(digest)}
        scopes: tuple[str, ...] = ()
        if source is not None:
            params["from"] = source.path
            scopes = (f"repository:{source.path}:pull",)
        response = await self.upstream.send(
            "POST", repo, "/blobs/uploads/", params=params, write=True, extra_scopes=scopes
        )
        if response.status_code == 201:
            return None
        if response.status_code != 202:
            raise await self._fail(response)
        return self._progress(response)

    async def patch_upload(
        self, repo: Repository, url: str, body: Body, headers: Mapping[str, str]
    ) -> UploadProgress:
        response = await self._session(repo, url, "PATCH", body=body, headers=headers)
        if response.status_code != 202:
            raise await self._fail(response, ErrorCode.BLOB_UPLOAD_UNKNOWN)
        return self._progress(response, url)

    async def finish_upload(
        self, repo: Repository, url: str, digest: Digest, body: Body, headers: Mapping[str, str]
    ) -> Digest | None:
        """PUT ``?digest=``; returns the digest upstream says it stored, if it said."""
        response = await self._session(
            repo, url, "PUT", body=body, headers=headers, params={"digest": str(digest)}
        )
        if response.status_code not in (201, 204):
            raise await self._fail(response, ErrorCode.BLOB_UPLOAD_UNKNOWN)
        return _header_digest(response.headers)

    async def upload_status(self, repo: Repository, url: str) -> UploadProgress | None:
        """None when upstream no longer knows the session."""
        response = await self._session(repo, url, "GET", write=False)
        if response.status_code == 404:
            return None
        if response.status_code not in (200, 204):
            raise await self._fail(response, ErrorCode.BLOB_UPLOAD_UNKNOWN)
        return self._progress(response, url)

    async def cancel_upload(self, repo: Repository, url: str) -> None:
        response = await self._session(repo, url, "DELETE")
        if response.status_code not in (200, 202, 204, 404):
            raise await self._fail(response, ErrorCode.BLOB_UPLOAD_UNKNOWN)

    async def _session(
        self,
        repo: Repository,
        url: str,
        method: str,
        *,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        params: dict[str, str] | None = None,
        write: bool = True,
    ) -> httpx.Response:
        path = await self.session_path(repo, url, params)
        return await self.upstream.send(
            method, repo, path, headers=headers, content=body, write=write
        )

    async def session_path(
        self, repo: Repository, url: str, params: dict[str, str] | None = None
    ) -> str:
        """Upstream's session URL as a path under ``/v2/<repo>`` (what ``Upstream.send``
        takes), with ``params`` added to its own query (``send(params=...)`` would
        replace that query, and with it a registry's ``_state``). A URL elsewhere is
        refused: credentials go only to the upstream's own repository paths."""
        if params:
            url = str(httpx.URL(url).copy_merge_params(params))
        base = self.upstream.base_url(await self.upstream.location(repo), regional=repo.regional)
        prefix = str(httpx.URL(f"{base}/v2/{repo.path}"))
        normalized = str(httpx.URL(url))
        if not normalized.startswith(prefix + "/"):
            raise RegistryError(
                ErrorCode.UPSTREAM_BAD_GATEWAY,
                f"upstream upload URL {normalized.split('?')[0]} is not under {prefix}",
            )
        return normalized[len(prefix) :]

    def _progress(self, response: httpx.Response, url: str | None = None) -> UploadProgress:
        location = response.headers.get("location")
        if location:
            url = str(response.url.join(location))
        if not url:
            raise RegistryError(
                ErrorCode.UPSTREAM_BAD_GATEWAY, "upstream opened an upload without a Location"
            )
        minimum = response.headers.get("oci-chunk-min-length", "")
        return UploadProgress(
            url,
            _range_last(response.headers.get("range")),
            int(minimum) if minimum.isdigit() else None,
        )


def _range_last(header: str | None) -> int | None:
    text = (header or "").strip().removeprefix("bytes=")
    first, dash, last = text.partition("-")
    if first != "0" or not dash or not last.isdigit() or len(last) > 19:
        return None
    return int(last)


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
