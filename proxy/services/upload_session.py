"""The pieces of an upload session: a request's body, the session, what a client sees.

Services speak in these typed values; ``proxy.routes.writes`` reads them from requests
(``Content-Range`` becomes a ``Chunk.span``) and renders ``UploadState`` as headers
(``Location``, ``Range``, ``Docker-Upload-UUID``, ``OCI-Chunk-Min-Length``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass, field

from proxy.cache.upload_store import OPEN, Spool, UploadRow
from proxy.oci.errors import ErrorCode, RegistryError

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Chunk:
    """A request body for an upload: streamed, with what the client said about it.
    ``span``: the first and last offset of its ``Content-Range``, if it sent one."""

    body: AsyncIterable[bytes] | None
    length: int | None = None  # Content-Length, when sent
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class UploadState:
    """What a client is told about its session: the proxy's id, the bytes it holds."""

    id: str
    offset: int
    chunk_min_length: int | None = None


@dataclass(eq=False)
class Session:
    row: UploadRow
    spool: Spool
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Upstream's OCI-Chunk-Min-Length, passed on as advice; not kept across a restart.
    chunk_min_length: int | None = None

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def offset(self) -> int:
        """The bytes the client sent that the proxy holds: where it goes on from."""
        return self.spool.size

    @property
    def upstream_open(self) -> bool:
        return self.row.upstream == OPEN

    def state(self) -> UploadState:
        return UploadState(self.id, self.offset, self.chunk_min_length)


def check_span(session: Session, chunk: Chunk) -> int | None:
    """The chunk's length from its ``Content-Range`` (None without one), checked
    against the session's offset and the chunk's ``Content-Length``."""
    if chunk.span is None:
        return None
    first, last = chunk.span
    if first != session.offset or last < first:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            f"Content-Range {first}-{last}: the upload is at offset {session.offset}",
        )
    expected = last - first + 1
    if chunk.length is not None and chunk.length != expected:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            f"Content-Length {chunk.length} does not match Content-Range {first}-{last} "
            f"({expected} bytes)",
        )
    return expected


def unknown_upload(upload_id: str) -> RegistryError:
    return RegistryError(
        ErrorCode.BLOB_UPLOAD_UNKNOWN,
        f"upload {upload_id[:64]} is not known (finished, cancelled or expired)",
        detail={"upload": upload_id[:64]},
    )
