"""An in-memory registry that speaks ``proxy.upstream.registry.Registry``, counting calls.

Service unit tests use it instead of an upstream on a socket, as distribution's proxy
tests count calls to their "truth" store::

    registry = MemoryRegistry()
    digest = registry.put_blob(b"layer")
    service = BlobService(cache, registry, Metrics(), offline=False)
    ...
    assert registry.calls["open_blob"] == 1
    registry.fail("head_manifest", RegistryError(ErrorCode.UPSTREAM_BAD_GATEWAY), times=2)
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository
from proxy.upstream.registry import (
    BlobInfo,
    Body,
    Document,
    ManifestInfo,
    PutManifest,
    UploadProgress,
)

BASE = "https://registry.invalid"


class MemoryStream:
    """Bytes handed out in pieces; ``gate`` (if set) holds the stream before each piece."""

    def __init__(
        self,
        data: bytes,
        *,
        piece: int = 64 * 1024,
        digest: Digest | None = None,
        media_type: str = mt.OCTET_STREAM,
        gate: asyncio.Event | None = None,
    ) -> None:
        self._data = data
        self._piece = piece
        self._gate = gate
        self.size: int | None = len(data)
        self.digest = digest
        self._media_type = media_type
        self.closed = False

    @property
    def media_type(self) -> str:
        return self._media_type

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), self._piece):
            if self._gate is not None:
                await self._gate.wait()
            yield self._data[start : start + self._piece]

    async def read(self, limit: int) -> bytes | None:
        return self._data if len(self._data) <= limit else None

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class _Upload:
    repo: str
    data: bytearray = field(default_factory=bytearray)
    writes: int = 0


async def _collect(body: Body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    assert isinstance(body, AsyncIterable)
    return b"".join([chunk async for chunk in body])


class MemoryRegistry:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}  # "repo@digest"
        self.manifests: dict[str, tuple[str, bytes]] = {}  # "repo@digest" -> (type, body)
        self.tag_map: dict[str, str] = {}  # "repo:tag" -> digest
        self.uploads: dict[str, _Upload] = {}
        self.writes = 0  # writes with bytes, into every upload session
        self.calls: Counter[str] = Counter()
        self._faults: dict[str, list[RegistryError]] = {}
        self.gate: asyncio.Event | None = None  # holds blob streams, to test followers

    # --- test set-up ---------------------------------------------------------------------

    def put_blob(self, data: bytes, repo: str = "p/r/i") -> Digest:
        digest = Digest.of(data)
        self.blobs[f"{repo}@{digest}"] = data
        return digest

    def put_manifest_bytes(
        self, body: bytes, media_type: str, repo: str = "p/r/i", tag: str | None = None
    ) -> Digest:
        digest = Digest.of(body)
        self.manifests[f"{repo}@{digest}"] = (media_type, body)
        if tag is not None:
            self.tag_map[f"{repo}:{tag}"] = str(digest)
        return digest

    def fail(self, operation: str, error: RegistryError, *, times: int = 1) -> None:
        self._faults.setdefault(operation, []).extend([error] * times)

    def _called(self, operation: str) -> None:
        self.calls[operation] += 1
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    def _manifest(self, repo: Repository, reference: str | Digest) -> tuple[Digest, str, bytes]:
        key = str(reference)
        if not Digest.is_digest(key):
            found = self.tag_map.get(f"{repo.path}:{reference}")
            if found is None:
                raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, "not found upstream")
            key = found
        entry = self.manifests.get(f"{repo.path}@{key}")
        if entry is None:
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, "not found upstream")
        return Digest.parse(key), entry[0], entry[1]

    # --- blobs and manifests -------------------------------------------------------------

    async def stat_blob(self, repo: Repository, digest: Digest) -> BlobInfo | None:
        self._called("stat_blob")
        data = self.blobs.get(f"{repo.path}@{digest}")
        return None if data is None else BlobInfo(len(data))

    async def open_blob(self, repo: Repository, digest: Digest) -> MemoryStream:
        self._called("open_blob")
        data = self.blobs.get(f"{repo.path}@{digest}")
        if data is None:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, "not found upstream")
        return MemoryStream(data, gate=self.gate)

    async def head_manifest(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...]
    ) -> ManifestInfo | None:
        self._called("head_manifest")
        try:
            digest, media_type, body = self._manifest(repo, reference)
        except RegistryError:
            return None
        return ManifestInfo(digest, media_type, len(body))

    async def get_manifest(
        self, repo: Repository, reference: str | Digest, accept: tuple[str, ...]
    ) -> MemoryStream:
        self._called("get_manifest")
        digest, media_type, body = self._manifest(repo, reference)
        return MemoryStream(body, digest=digest, media_type=media_type)

    async def put_manifest(
        self, repo: Repository, reference: str | Digest, media_type: str, body: bytes
    ) -> PutManifest:
        self._called("put_manifest")
        tag = None if Digest.is_digest(str(reference)) else str(reference)
        return PutManifest(self.put_manifest_bytes(body, media_type, repo.path, tag), None)

    async def delete_manifest(self, repo: Repository, reference: str | Digest) -> bool:
        self._called("delete_manifest")
        return self.manifests.pop(f"{repo.path}@{reference}", None) is not None

    async def tags(self, repo: Repository, params: Mapping[str, str], limit: int) -> Document:
        self._called("tags")
        prefix = f"{repo.path}:"
        names = sorted(k[len(prefix) :] for k in self.tag_map if k.startswith(prefix))
        body = json.dumps({"name": repo.path, "tags": names})
        return Document("application/json", body.encode())

    async def referrers(
        self, repo: Repository, digest: Digest, params: Mapping[str, str], limit: int
    ) -> Document:
        self._called("referrers")
        return Document(mt.OCI_INDEX, b'{"schemaVersion": 2, "manifests": []}')

    # --- uploads (GAR's way: one write per session) -------------------------------------

    def _url(self, repo: Repository, upload_id: str) -> str:
        return f"{BASE}/artifacts-uploads/namespaces/{repo.project}/uploads/{upload_id}"

    def _session(self, url: str) -> tuple[str, _Upload]:
        upload_id = url.split("?")[0].rsplit("/", 1)[-1]
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, "not found upstream")
        return upload_id, upload

    async def start_upload(self, repo: Repository) -> UploadProgress:
        self._called("start_upload")
        upload_id = f"u{len(self.uploads) + 1}"
        self.uploads[upload_id] = _Upload(repo.path)
        return UploadProgress(self._url(repo, upload_id))

    async def mount(
        self, repo: Repository, digest: Digest, source: Repository | None
    ) -> UploadProgress | None:
        self._called("mount")
        data = self.blobs.get(f"{source.path}@{digest}") if source else None
        if data is None:
            return await self.start_upload(repo)
        self.blobs[f"{repo.path}@{digest}"] = data
        return None

    async def _write(self, upload: _Upload, body: Body) -> None:
        data = await _collect(body)
        if not data:
            return
        if upload.writes:
            raise RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, "one write per upload session")
        upload.writes += 1
        self.writes += 1
        upload.data += data

    async def write_upload(
        self, repo: Repository, url: str, body: Body, length: int | None
    ) -> UploadProgress:
        self._called("write_upload")
        _, upload = self._session(url)
        await self._write(upload, body)
        return UploadProgress(url, len(upload.data) - 1 if upload.data else 0)

    async def commit_upload(
        self, repo: Repository, url: str, digest: Digest, body: Body, length: int | None
    ) -> Digest | None:
        self._called("commit_upload")
        upload_id, upload = self._session(url)
        await self._write(upload, body)
        stored = self.stored_as(bytes(upload.data), digest)
        del self.uploads[upload_id]
        self.blobs[f"{repo.path}@{stored}"] = bytes(upload.data)
        return stored

    def stored_as(self, data: bytes, digest: Digest) -> Digest:
        """The digest an upload is kept (and reported) under; a subclass may differ."""
        if Digest.of(data, digest.algorithm) != digest:
            raise RegistryError(ErrorCode.DIGEST_INVALID, "digest did not match content")
        return digest

    async def cancel_upload(self, repo: Repository, url: str) -> None:
        self._called("cancel_upload")
        self.uploads.pop(url.split("?")[0].rsplit("/", 1)[-1], None)
