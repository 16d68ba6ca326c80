"""Request bodies on their way in: spooled once, counted, and handed on to upstream.

An ``Intake`` reads one client body. Each piece is counted, held to what the client
announced (``Content-Range``), written to the session's spool once, and then handed
to whoever iterates ``pieces()`` (an upstream write, streaming as the client sends) or
to nobody (``drain()``: the spool is the only place it goes). An upstream write that
stops early (upstream cut it, refused it) does not stop the client: ``drain()`` takes
the rest into the spool, from which a fresh upstream session gets the whole blob.
Failures of the source (the client left mid-body) or of the spool (a full disk) are
kept in ``failure``: a write that failed because of them is not upstream's fault.

``gated`` holds the last byte of a final write back until the bytes are known to match
the digest, so upstream never receives a complete body the proxy refuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from proxy.cache.upload_store import Spool
from proxy.oci.errors import ErrorCode, RegistryError

# Upstream refusals a fresh session (and the same bytes) may get past: a transport or
# server failure, a session that is gone or would not take the write, a credential that
# a new session's token trade renews, a rate limit. Not: the client's own errors (digest,
# size, name), or a permission.
FRESH_MAY_HELP = frozenset(
    {
        ErrorCode.UPSTREAM_BAD_GATEWAY,
        ErrorCode.UPSTREAM_TIMEOUT,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.UNKNOWN,
        ErrorCode.BLOB_UPLOAD_UNKNOWN,
        ErrorCode.BLOB_UPLOAD_INVALID,
        ErrorCode.RANGE_INVALID,
        ErrorCode.UPSTREAM_REJECTED,
        ErrorCode.UNSUPPORTED,
        ErrorCode.CREDENTIALS_REJECTED,
        ErrorCode.TOOMANYREQUESTS,
    }
)


class Intake:
    def __init__(
        self,
        body: AsyncIterable[bytes],
        spool: Spool,
        limit: int | None = None,
        *,
        upstream_too: bool = False,
    ) -> None:
        self._source = aiter(body)
        self.spool = spool
        self.limit = limit
        # Bytes also going upstream now: a full disk loses the spool (the write goes on)
        # rather than failing the request.
        self.upstream_too = upstream_too
        self.received = 0
        self.done = False
        self.failure: Exception | None = None

    def _fail(self, error: Exception) -> Exception:
        self.done = True
        self.failure = error
        return error

    async def _next(self) -> bytes | None:
        while not self.done:
            try:
                piece = await anext(self._source)
            except StopAsyncIteration:
                self.done = True
                if self.limit is not None and self.received != self.limit:
                    raise self._fail(
                        RegistryError(
                            ErrorCode.SIZE_INVALID,
                            f"chunk of {self.received} bytes, but Content-Range announced "
                            f"{self.limit}",
                        )
                    ) from None
                return None
            except Exception as error:  # the client went away mid-body (CLIENT_GONE)
                raise self._fail(error) from None
            if not piece:
                continue
            self.received += len(piece)
            if self.limit is not None and self.received > self.limit:
                message = f"chunk longer than its Content-Range ({self.limit} bytes)"
                raise self._fail(RegistryError(ErrorCode.SIZE_INVALID, message))
            try:
                self.spool.write(piece)
            except RegistryError as error:  # past the identity's allowance: nothing taken
                raise self._fail(error) from None
            except OSError as error:
                if not self.upstream_too:
                    message = f"no room on the cache disk to hold the upload ({error.strerror})"
                    raise self._fail(RegistryError(ErrorCode.CACHE_FULL, message)) from None
                self.spool.lose()
                self.spool.write(piece)  # counted (the client's offset), no longer kept
            return piece
        return None

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body, piece by piece, each spooled before it is handed on."""
        while (piece := await self._next()) is not None:
            yield piece

    async def drain(self) -> None:
        """The rest of the body into the spool alone."""
        while await self._next() is not None:
            pass


async def chained(*streams: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    for stream in streams:
        async for piece in stream:
            yield piece


async def gated(
    pieces: AsyncIterable[bytes], check: Callable[[], Awaitable[None]], total: int | None = None
) -> AsyncIterator[bytes]:
    """``pieces``, all but the very last byte as they come, that byte only once
    ``check()`` has passed: when it raises, the body ends short (the connection is
    dropped) and nothing is committed. One byte, not the last piece, so that a client
    pausing mid-body has every byte it sent on its way upstream meanwhile.

    With the body's ``total`` length known, pieces pass on as they are and only the one
    holding byte ``total`` is split; without it every piece is held back by a byte,
    which costs a copy of each."""
    if total is None:
        async for piece in _held_back(pieces, check):
            yield piece
        return
    sent, checked = 0, False
    async for piece in pieces:
        if not piece:
            continue
        end = sent + len(piece)
        if checked or end < total:
            sent = end
            yield piece  # before the last byte; or past it, for the writer to refuse
            continue
        last = total - 1 - sent  # where the body's last byte sits in this piece
        if last > 0:
            yield piece[:last]
        await check()
        checked, sent = True, end
        yield piece[last:]
    # Shorter than ``total``: never checked, and the writer refuses a short body.


async def _held_back(
    pieces: AsyncIterable[bytes], check: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    tail = b""
    async for piece in pieces:
        if not piece:
            continue
        out = tail + memoryview(piece)[:-1]  # one copy, of a piece already in memory
        tail = piece[-1:]
        if out:
            yield out
    await check()
    if tail:
        yield tail
