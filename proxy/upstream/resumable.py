"""A blob body that outlives its connection: a cut mid-body is picked up where it broke.

GAR serves a blob through a signed download (docs/GAR.md D1); a long transfer that
loses its connection (a reset, a read timeout) would fail the fill and cut the client's
answer short, though upstream is well and the client was already sent a 200. Instead
the blob is asked for again, from the first byte not received: ``Range: bytes=N-``
through the registry (a fresh signature). Whether GAR honours ``Range`` there is
unknown (D4), so both answers do: a 206 that starts at N goes on, a 200 with the whole
blob has its first N bytes skipped. Anything else ends the body with that answer's
error. The fill checks the digest of what arrives, as for any body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from proxy.oci.errors import RegistryError
from proxy.upstream import errors
from proxy.upstream.calls import ASKED
from proxy.upstream.registry_stream import BlobStream, error_body

log = logging.getLogger("gar_proxy.upstream")
# Cuts one body may survive; each resume must bring bytes before the next counts.
RESUMES = 3
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")

Reopen = Callable[[int], Awaitable[httpx.Response]]


def range_start(header: str | None) -> int | None:
    """The first byte a ``Content-Range`` answer carries.

    >>> range_start("bytes 100-199/200"), range_start("bytes */200"), range_start(None)
    (100, None, None)
    """
    found = _CONTENT_RANGE.match(header or "")
    return int(found.group(1)) if found else None


class ResumingBlobStream(BlobStream):
    """A blob GET's body; ``reopen(start)`` asks for the blob again from ``start``."""

    def __init__(self, response: httpx.Response, reopen: Reopen) -> None:
        super().__init__(response)
        self._reopen = reopen
        # Ranges count encoded bytes: a body upstream encoded cannot be picked up.
        self._resumable = response.headers.get("content-encoding", "identity") == "identity"

    async def _chunks(self) -> AsyncIterator[bytes]:
        received = skip = resumes = 0
        while True:
            try:
                async for chunk in self._response.aiter_bytes():
                    if skip:  # a 200 to a resume: the bytes already passed on
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    received += len(chunk)
                    yield chunk
                return
            except httpx.TransportError as error:
                if not self._resumable or resumes >= RESUMES:
                    raise self._translated(error) from None
                resumes += 1
                cut = self._translated(error)
            log.info("upstream %s; asking again from byte %d", cut.message, received)
            skip = await self._resume(received, cut)
            if skip < 0:  # every byte had arrived: the end is the digest check's to judge
                return

    def _translated(self, error: httpx.HTTPError) -> RegistryError:
        where = self._response.extensions.get(ASKED) or str(self._response.request.url)
        return errors.from_transport(error, where)

    async def _resume(self, start: int, cut: RegistryError) -> int:
        """Swap in the answer to ``Range: bytes=start-``; the bytes to skip of it, or -1
        when ``start`` is the blob's end (a chunked body cut before its last chunk: 416
        with ``bytes */start``)."""
        await self._response.aclose()
        response = await self._reopen(start)
        status, header = response.status_code, response.headers.get("content-range")
        if status == 206 and range_start(header) == start:
            self._response = response
            return 0
        if status == 416 and (header or "").replace(" ", "") == f"bytes*/{start}":
            await response.aclose()
            return -1
        if status == 200 and (self.size is None or response.headers.get("content-length")
                              in (None, str(self.size))):  # fmt: skip
            self._response = response
            return start
        body = await error_body(response) if status >= 400 else b""
        await response.aclose()
        if status >= 400:
            raise errors.from_response(response, body)
        raise cut  # an answer that cannot continue the body (a 206 elsewhere, say)
