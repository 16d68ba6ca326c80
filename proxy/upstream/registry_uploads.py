"""Blob upload sessions on the upstream registry: opaque URLs on its host, one write.

GAR answers ``POST .../blobs/uploads/`` with a relative ``Location`` outside
``/v2/<name>/`` (``/artifacts-uploads/namespaces/P/repositories/R/uploads/<opaque>``,
or ``/v2/P/R/pkg/blobs/uploads/<id>``), and a session takes one write: the whole blob
in one ``PATCH`` then an empty ``PUT``, or the whole blob in the ``PUT`` (docs/GAR.md).
So a session URL is opaque: any path on the upstream's own origin is taken, another
origin is refused when upstream hands it out, and neither path nor URL is ever quoted
(the path is the credential: it is served without ``Authorization``). Requests to it go
through ``Upstream.send_to`` with credentials for that origin only::

    session = await registry.start_upload(repo)
    stored = await registry.commit_upload(repo, session.url, digest, body, size)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass

import httpx

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.upstream import redirects
from proxy.upstream.client import Upstream

Body = bytes | AsyncIterable[bytes] | None
SESSION = "the upstream upload session"  # what errors and logs say instead of its URL


@dataclass(frozen=True)
class UploadProgress:
    """An upstream upload session: its URL now, its ``Range: 0-N`` if it sent one, and
    its ``OCI-Chunk-Min-Length`` advice."""

    url: str
    range_last: int | None = None
    chunk_min_length: int | None = None

    def offset(self, local: int) -> int:
        """Bytes upstream holds; "0-0" is ambiguous (none, or one), ``local`` decides."""
        if self.range_last is None:
            return local
        return min(local, 1) if self.range_last == 0 else self.range_last + 1


class UploadCalls:
    """The upload operations of ``RegistryClient``."""

    upstream: Upstream
    _fail: Callable[..., Awaitable[RegistryError]]

    async def start_upload(self, repo: Repository) -> UploadProgress:
        response = await self.upstream.send("POST", repo, "/blobs/uploads/", write=True)
        if response.status_code != 202:
            raise await self._fail(response)
        return await self._progress(repo, response)

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
        return await self._progress(repo, response)

    async def write_upload(
        self, repo: Repository, url: str, body: Body, length: int | None
    ) -> UploadProgress:
        """One ``PATCH`` with the bytes (the session's one write, on GAR)."""
        response = await self._session(repo, url, "PATCH", body, length)
        if response.status_code not in (200, 202, 204):
            raise await self._session_fail(response)
        return await self._progress(repo, response, url)

    async def commit_upload(
        self, repo: Repository, url: str, digest: Digest, body: Body, length: int | None
    ) -> Digest | None:
        """``PUT ?digest=``, with the bytes or none; the digest upstream says it stored."""
        response = await self._session(repo, url, "PUT", body, length, {"digest": str(digest)})
        if response.status_code not in (200, 201, 204):
            raise await self._session_fail(response)
        header = response.headers.get("docker-content-digest")
        try:
            return Digest.parse(header) if header else None
        except RegistryError:
            return None

    async def cancel_upload(self, repo: Repository, url: str) -> None:
        response = await self._session(repo, url, "DELETE", None, None)
        if response.status_code not in (200, 202, 204, 404):
            raise await self._session_fail(response)

    async def _session_fail(self, response: httpx.Response) -> RegistryError:
        """A session's refusal; a 404 there means the session is gone, whatever code
        came with it (then a fresh one is worth a try). A 403 is the session's, not a
        permission: the POST that opened it was allowed with the same credentials, and
        its path is a signature that may have run out, as a download's does (docs/GAR.md
        U13, D3); a fresh session's POST says whether the permission is really gone."""
        error = await self._fail(response, ErrorCode.BLOB_UPLOAD_UNKNOWN)
        if response.status_code == 404 and error.code is not ErrorCode.BLOB_UPLOAD_UNKNOWN:
            return RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, error.message)
        if response.status_code == 403:
            return RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID, f"upstream refused {SESSION}: {error.message}"
            )
        return error

    async def _session(
        self,
        repo: Repository,
        url: str,
        method: str,
        body: Body,
        length: int | None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        if params:  # added to the session's own query, which a registry may need
            url = str(httpx.URL(url).copy_merge_params(params))
        headers: dict[str, str] = {}
        if method in ("PATCH", "PUT"):
            headers["Content-Type"] = mt.OCTET_STREAM
            headers["Content-Length"] = str(length if length is not None and body else 0)
            if body and length is None:
                del headers["Content-Length"]  # streamed: chunked transfer
        streamed = body is not None and not isinstance(body, bytes)  # lean/ sends it
        return await self.upstream.send_to(
            method, repo, url, headers=headers, content=body, write=method != "GET",
            lean_body=streamed, label=SESSION,
        )  # fmt: skip

    async def _progress(
        self, repo: Repository, response: httpx.Response, url: str | None = None
    ) -> UploadProgress:
        location = response.headers.get("location")
        if location:
            target = response.url.join(location)
            base = self.upstream.base_url(
                await self.upstream.location(repo), regional=repo.regional
            )
            if not redirects.same_origin(target, base):
                raise RegistryError(
                    ErrorCode.UPSTREAM_BAD_GATEWAY,
                    "upstream opened an upload session on another host "
                    f"({redirects.host_of(target)}); refused, credentials go only to "
                    f"{redirects.host_of(base)}",
                )
            url = str(target)
        if not url:
            raise RegistryError(
                ErrorCode.UPSTREAM_BAD_GATEWAY, "upstream opened an upload without a Location"
            )
        minimum = response.headers.get("oci-chunk-min-length", "")
        return UploadProgress(
            url,
            _range_last(response.headers.get("range")),
            int(minimum) if minimum.isdigit() and len(minimum) < 19 else None,
        )


def _range_last(header: str | None) -> int | None:
    text = (header or "").strip().removeprefix("bytes=")
    first, dash, last = text.partition("-")
    if first != "0" or not dash or not last.isdigit() or len(last) > 19:
        return None
    return int(last)
