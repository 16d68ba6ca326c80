"""The pieces of an upload session: its request bodies, state, and upstream's answers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass, field

from proxy.cache.upload_store import Tee, UploadRow
from proxy.oci.errors import ErrorCode, RegistryError

# At most 19 digits (no upload reaches 10**19 bytes): a longer number is out of range
# before int() sees it, which refuses more than 4,300 digits with ValueError.
CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?")
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Chunk:
    """A request body for an upload: streamed, with what the client said about it."""

    body: AsyncIterable[bytes] | None
    length: int | None = None  # Content-Length, when sent
    content_range: str | None = None


@dataclass(eq=False)
class Session:
    row: UploadRow
    tee: Tee
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Upstream's OCI-Chunk-Min-Length, passed on so clients size their PATCHes to
    # what GAR takes; not kept across a restart (it is advice, repeated on each answer).
    chunk_min_length: int | None = None

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def offset(self) -> int:
        return self.row.offset

    def headers(self, name: str | None = None) -> dict[str, str]:
        """Location (on the proxy), Range, id and upstream's minimum chunk size, if any;
        ``name`` as the client spelled it."""
        where = name if name is not None else str(self.row.repository)
        headers = {
            "Location": f"/v2/{where}/blobs/uploads/{self.id}",
            # Registries write "0-0" for an empty upload too; clients expect this form.
            "Range": f"0-{max(self.row.offset - 1, 0)}",
            "Docker-Upload-UUID": self.id,
        }
        if self.chunk_min_length is not None:
            headers["OCI-Chunk-Min-Length"] = str(self.chunk_min_length)
        return headers


def out_of_range(session: Session, what: str) -> RegistryError:
    return RegistryError(
        ErrorCode.RANGE_INVALID,
        f"{what}: the upload is at offset {session.offset}",
        headers=session.headers(),
    )


def expected_length(session: Session, chunk: Chunk) -> int | None:
    """Check Content-Range against the offset; the chunk's length when it has one."""
    if chunk.content_range is None:
        return None
    match = CONTENT_RANGE.fullmatch(chunk.content_range.strip())
    if match is None or int(match[1]) != session.offset or int(match[2]) < int(match[1]):
        raise out_of_range(session, f"Content-Range {chunk.content_range[:60]!r}")
    expected = int(match[2]) - int(match[1]) + 1
    if chunk.length is not None and chunk.length != expected:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            f"Content-Length {chunk.length} does not match Content-Range "
            f"{chunk.content_range[:60]!r} ({expected} bytes)",
        )
    return expected


def unknown_upload(upload_id: str) -> RegistryError:
    return RegistryError(
        ErrorCode.BLOB_UPLOAD_UNKNOWN,
        f"upload {upload_id[:64]} is not known (finished, cancelled or expired)",
        detail={"upload": upload_id[:64]},
    )


class Flow:
    """Counts, tees and bounds one request body on its way to upstream."""

    def __init__(self, tee: Tee, limit: int | None) -> None:
        self.tee = tee
        self.limit = limit
        self.received = 0

    async def through(self, body: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in body:
                if not chunk:
                    continue
                self.received += len(chunk)
                if self.limit is not None and self.received > self.limit:
                    raise RegistryError(
                        ErrorCode.SIZE_INVALID,
                        f"chunk longer than its Content-Range ({self.limit} bytes)",
                    )
                self.tee.write(chunk)
                yield chunk
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
