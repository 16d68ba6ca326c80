"""The two kinds of body ``lean.LeanTransport`` answers with: ``DirectBody`` (a 200
with a Content-Length, in the batches ``wire.Wire`` receives it into) and
``ParsedBody`` (anything else, parsed by ``h11``). Both raise httpx's exceptions and
hand a connection they finished cleanly back to the transport (``checkin``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import h11
import httpx

from proxy.upstream.lean.wire import Wire

Checkin = Callable[[Wire], None]  # a connection free for the next request
# A batch not full after this long is handed over as it is (a slow upstream).
EARLY_AFTER = 0.02


class DirectBody(httpx.AsyncByteStream):
    """A Content-Length body, in the batches ``Wire`` receives it into."""

    def __init__(
        self,
        checkin: Checkin,
        wire: Wire,
        request: httpx.Request,
        length: int,
        timeout: float | None,
        keep: bool,
    ) -> None:
        self._checkin, self._wire = checkin, wire
        self._request, self.length, self._timeout, self._keep = request, length, timeout, keep
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        wire, clock = self._wire, asyncio.get_running_loop().time
        progress, seen = clock(), 0
        while True:
            batch = wire.take()
            if batch is not None:
                yield batch  # type: ignore[misc]  # a memoryview: readers take any buffer
                continue
            if not wire.remaining:
                self._release(reuse=self._keep)
                return
            if wire.closed:
                self._release(reuse=False)
                got = self.length - wire.remaining
                raise httpx.RemoteProtocolError(
                    f"upstream closed the connection after {got} of {self.length} body bytes",
                    request=self._request,
                )
            if await wire.wait_briefly(EARLY_AFTER):
                continue
            # A batch is slow to fill: hand over what it holds, as a slow upstream's
            # bytes should reach followers; the read timeout counts from the last byte.
            partial = wire.take_partial()
            if partial is not None:
                yield partial  # type: ignore[misc]
            if wire.received != seen:
                progress, seen = clock(), wire.received
            elif self._timeout is not None and clock() - progress > self._timeout:
                self._wire.abort()
                self._open = False
                raise httpx.ReadTimeout("timed out reading from upstream", request=self._request)

    def recycle(self, piece: memoryview) -> None:
        """A batch this body yielded, written and hashed: its memory may take the next."""
        self._wire.recycle(piece)

    def _release(self, *, reuse: bool) -> None:
        if self._open:
            self._open = False
            if reuse:
                self._checkin(self._wire)
            else:
                self._wire.close()

    async def aclose(self) -> None:
        if self._open:  # left before the end: the rest of the body is never read
            self._open = False
            self._wire.abort()


class ParsedBody(httpx.AsyncByteStream):
    """Any other body (chunked, close-delimited, an error's), parsed by ``h11``."""

    def __init__(
        self,
        checkin: Checkin,
        wire: Wire,
        request: httpx.Request,
        conn: h11.Connection,
        timeout: float | None,
    ) -> None:
        self._checkin, self._wire = checkin, wire
        self._request, self._conn, self._timeout = request, conn, timeout
        self._open = True
        self._eof_fed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                event = self._conn.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    self._finish()
                    return
                else:
                    await self._more()
        except h11.ProtocolError as error:
            self._open = False
            self._wire.close()
            raise httpx.RemoteProtocolError(str(error), request=self._request) from None

    async def _more(self) -> None:
        wire = self._wire
        if wire.pending:
            self._conn.receive_data(wire.drain())
        elif wire.closed and not self._eof_fed:
            self._eof_fed = True
            self._conn.receive_data(b"")  # h11 decides: the end, or a cut body
        elif wire.closed:
            raise httpx.RemoteProtocolError("upstream closed mid-body", request=self._request)
        else:
            await wire.wait(self._timeout, self._request)

    def _finish(self) -> None:
        if self._open:
            self._open = False
            conn = self._conn
            # Bytes past the answer (a second response in the same packet) mean a
            # confused or hostile server: such a connection is not reused.
            done = conn.our_state is h11.DONE and conn.their_state is h11.DONE
            if done and not conn.trailing_data[0]:
                self._checkin(self._wire)
            else:
                self._wire.close()

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._wire.abort()
