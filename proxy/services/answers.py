"""What a service hands back to a route: metadata plus, for GETs, a body."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field

from proxy.oci.digest import Digest


@dataclass
class Answer:
    digest: Digest
    media_type: str
    size: int | None  # None: unknown until streamed (chunked)
    body: AsyncIterable[bytes] | bytes | None = None  # a FileBody can be sent zero-copy
    span: tuple[int, int] | None = None  # a 206's half-open range
    headers: dict[str, str] = field(default_factory=dict)
