"""Responses for streamed bodies: a ``FileBody`` as zero-copy segments when the server
offers them; any body cut short by its source (an upstream that failed mid-fill)
ends the connection quietly, with one warning, when the server offers that."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import aclosing

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.cache.bodies import FileBody
from proxy.http.server import ABORT, ZEROCOPY
from proxy.oci.errors import RegistryError

log = logging.getLogger("gar_proxy.http")


class CutResponse(StreamingResponse):
    """A ``StreamingResponse`` whose body may fail once the headers are out: the client
    sees the connection close short of its Content-Length (what a cut means in HTTP/1.1)
    and the log one warning, not an internal error with a traceback per client."""

    abortable = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.abortable = ABORT in scope.get("extensions", {})
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        try:
            await self.stream_body(send)
        except RegistryError as error:
            if not self.abortable:
                raise
            log.warning("response cut short: %s", error.message)
            await send({"type": ABORT})

    async def stream_body(self, send: Send) -> None:
        await super().stream_response(send)


class FileBodyResponse(CutResponse):
    """Streams a ``FileBody``; ``on_sent(n)`` gets the bytes handed to the server.

    Disconnects are handled as ``StreamingResponse`` does: a task waits for
    ``http.disconnect`` and cancels the stream, so a client that leaves while a fill
    is still running stops waiting for it.
    """

    def __init__(
        self,
        body: FileBody,
        status_code: int,
        headers: dict[str, str],
        media_type: str,
        on_sent: Callable[[int], None],
    ) -> None:
        super().__init__(body, status_code, headers, media_type)
        self.file_body = body
        self.on_sent = on_sent
        self.zero_copy = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Segments are sent against a Content-Length; a body of unknown length (a fill
        # whose upstream sent it chunked or encoded) goes out as chunked bytes.
        known_length = "content-length" in self.headers
        self.zero_copy = known_length and ZEROCOPY in scope.get("extensions", {})
        await super().__call__(scope, receive, send)

    async def stream_body(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        sent = 0
        try:
            if self.zero_copy:
                # aclosing: a client gone mid-body releases the file now, not at GC.
                async with aclosing(self.file_body.segments()) as segments:
                    async for fd, offset, count in segments:
                        await send({"type": ZEROCOPY, "file": fd, "offset": offset,
                                    "count": count, "more_body": True})  # fmt: skip
                        sent += count
            else:
                async with aclosing(self.file_body.chunks()) as chunks:
                    async for chunk in chunks:
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})  # fmt: skip
                        sent += len(chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.on_sent(sent)
