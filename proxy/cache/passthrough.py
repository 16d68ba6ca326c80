"""An upstream blob body sent to one client without caching it (no room on disk).

The digest is still checked: the last piece is held back until the bytes hash to
the digest asked for, so a client never completes a download of wrong content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from proxy.cache.fills import Source
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError


class PassThrough:
    def __init__(self, source: Source, digest: Digest) -> None:
        self.source = source
        self.digest = digest
        self.size = source.size
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        verifier = self.digest.verifier()
        held: bytes | None = None
        sent = 0
        try:
            async for piece in self.source:
                if held is not None:
                    yield held
                verifier.update(piece)
                sent += len(piece)
                held = piece
            if (self.size is not None and sent != self.size) or not verifier.matches():
                raise RegistryError(
                    ErrorCode.UPSTREAM_CORRUPT,
                    f"upstream content does not match {self.digest} ({sent} bytes)",
                )
            if held is not None:
                yield held
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.source.aclose()
