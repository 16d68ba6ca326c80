"""The server's protocol with bounds: every connection either makes progress or ends.

uvicorn holds a connection that never sends a byte, one that trickles its headers, and
a body that stops halfway, for ever; its keep-alive timeout starts only after a first
answer, and asyncio gives a stuck TLS handshake 60 s. ``guarded_protocol`` makes a
``ZeroCopyProtocol`` subclass bound to one server's ``Connections`` that, per
connection:

- refuses it at accept time beyond ``server.max_connections`` open, or
  ``server.max_connections_per_client`` from its address: 503 ``UNAVAILABLE`` and
  closed (over TLS, closed: there is no handshake to answer through);
- runs the TLS handshake itself (``loop.start_tls``), so a handshaking connection is
  counted and ends after ``server.tls_handshake_timeout``;
- closes it after ``server.idle_timeout`` without a request (before the first one too);
- answers 408 and closes when a request's line and headers took longer than
  ``server.header_timeout`` from their first byte (however slowly they trickle);
- closes it when a request body sent nothing for ``server.body_timeout`` while the
  app waited for it (the app then sees a disconnect); a body the app is slow to read
  (reading paused) is not the client's fault and is not timed;
- closes it when a body, from its first byte, arrives slower than
  ``server.body_min_rate`` on average with ``server.body_rate_grace`` seconds of credit
  (Apache's mod_reqtimeout ``MinRate``): it must be in by first byte + grace +
  bytes / rate, not counting time reading was paused. A client sending a byte just
  inside ``body_timeout`` otherwise held its connection and upload session for ever;
- closes it when the client took no byte of an answer for ``server.send_timeout``
  (uvicorn's writes: its write buffer stayed full; zero-copy file sends: the socket
  stayed unwritable, ``proxy.http.sendfile``).

A connection has one timer, re-armed lazily: a body chunk only moves a deadline, and
the timer, when it fires early, waits for the rest. Each end is noted in the server's
``Connections``, which logs them together.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from typing import Any, ClassVar

from proxy.http.limits import BodyRate, ConnectionLimits, Connections
from proxy.http.server import ZeroCopyCycle, ZeroCopyProtocol, write_error
from proxy.oci.errors import ErrorCode, RegistryError

log = logging.getLogger("gar_proxy.connections")
# Phases of a connection; only the first three have a deadline.
IDLE, HEADERS, BODY, BUSY = "idle", "headers", "body", "busy"
_TIMED_OUT = {IDLE: "idle", HEADERS: "header timeout", BODY: "body timeout"}
TOO_SLOW = "body under server.body_min_rate"


class GuardedProtocol(ZeroCopyProtocol):
    """Set by ``guarded_protocol``: the server's connections and its TLS context."""

    guard: ClassVar[Connections]
    tls: ClassVar[ssl.SSLContext | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None  # set while this connection is counted
        self._started = self._lost = False
        self._phase = BUSY
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._stalled: float | None = None  # since when the client takes none of our bytes
        self._early: list[bytes] = []
        self._raw: list[bytes] | None = None
        self._handshaking: asyncio.Task[None] | None = None  # kept: a task needs a holder
        self._body = BodyRate()

    @property
    def limits(self) -> ConnectionLimits:
        return self.guard.limits

    # --- accept, TLS, close ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        refusal = self.guard.admit(address)
        if refusal is not None:
            self.guard.note(f"refused: {refusal}")
            if self.tls is None:
                error = RegistryError(ErrorCode.TOO_MANY_CONNECTIONS, f"{refusal} reached")
                write_error(transport, error, [(b"retry-after", b"1")])
            transport.close()
            return
        self._address = address
        if self.tls is None:
            self._start(transport)
            return
        self._raw = []  # the ClientHello, if it comes before the TLS layer
        transport.pause_reading()  # stdlib asyncio honours this; uvloop reads on regardless
        self._handshaking = self.loop.create_task(self._handshake(transport))
        self.loop.call_soon(self._hand_over, transport)  # runs after start_tls's first step

    def _hand_over(self, transport: asyncio.Transport) -> None:
        """Give what was read before ``start_tls`` took the transport to its TLS layer
        (whose incoming buffer keeps it until the handshake reads it)."""
        layer = transport.get_protocol()
        if layer is self:  # start_tls has not run yet (it is queued first): look again
            handshaking = self._handshaking
            if not transport.is_closing() and handshaking is not None and not handshaking.done():
                self.loop.call_soon(self._hand_over, transport)
            return
        for data in self._raw or ():
            _feed(layer, data)
        self._raw = None

    async def _handshake(self, transport: asyncio.Transport) -> None:
        assert self.tls is not None
        timeout = self.limits.tls_handshake_timeout or None
        began = self.loop.time()
        try:
            secure = await self.loop.start_tls(
                transport,
                self,
                self.tls,
                server_side=True,
                ssl_handshake_timeout=timeout,
                ssl_shutdown_timeout=timeout,  # a closing one too (a peer may never answer)
            )
        except Exception as error:  # any end of a handshake is this connection's end
            transport.close()
            # Both loops abort a late handshake with ConnectionAbortedError: tell by the time.
            late = timeout is not None and self.loop.time() - began >= timeout
            self.guard.note("TLS handshake timeout" if late else "TLS handshake failed")
            if not isinstance(error, (OSError, ssl.SSLError, TimeoutError, EOFError)):
                log.warning("TLS handshake ended by %r", error)  # not a client's doing
            self._release()
            return
        if secure is None or self._lost:
            self._release()
            return
        self._start(secure)

    def _start(self, transport: asyncio.Transport) -> None:
        self._started = True
        super().connection_made(transport)
        self._expect(IDLE, self.limits.idle_timeout)
        early, self._early = self._early, []
        for data in early:  # what TLS decrypted before start_tls returned to us
            if not transport.is_closing():
                self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timer()
        self._release()
        if self._started:
            super().connection_lost(exc)

    def _release(self) -> None:
        if self._address is not None:
            self.guard.release(self._address)
            self._address = None

    # --- phases ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._started:
            if self._raw is not None:
                self._raw.append(data)  # still TLS records: for the TLS layer
            else:
                self._early.append(data)  # decrypted before start_tls returned to us
            return
        if self._phase == IDLE:
            self._expect(HEADERS, self.limits.header_timeout)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._body = BodyRate()
        self._expect(BODY, self.limits.body_timeout)
        cycle = self.cycle
        if isinstance(cycle, ZeroCopyCycle):  # its file sends wait on the socket themselves
            cycle.send_idle = self.limits.send_timeout or None
            cycle.on_stall = self._send_stalled

    def _send_stalled(self) -> None:
        self.guard.note("send timeout")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._phase != BODY:
            return
        if self.limits.body_timeout:
            self._deadline = self.loop.time() + self.limits.body_timeout
        if self.limits.body_min_rate:
            self._body.received(len(body), self.loop.time(), self.flow.read_paused)
            due = self._rate_due()
            if due != math.inf:
                self._arm(due)  # a no-op unless it is due before the timer

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._expect(BUSY, 0)

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        self._unset_keepalive_if_required()  # uvicorn's keep-alive timer: ours does its job
        if not pipelined and self._phase == BUSY and not self.transport.is_closing():
            self._expect(IDLE, self.limits.idle_timeout)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None and self.limits.send_timeout > 0:
            self._stalled = self.loop.time()  # the client takes nothing from here on
            self._arm(self._stalled + self.limits.send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stalled = None

    # --- the one timer ---------------------------------------------------------------

    def _expect(self, phase: str, seconds: float) -> None:
        """Enter ``phase``, which must end within ``seconds`` (0: no deadline)."""
        self._phase = phase
        if phase == BUSY or seconds <= 0:
            self._deadline = math.inf
            return
        self._deadline = self.loop.time() + seconds
        self._arm(self._deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None and self._timer.when() <= when:
            return  # it fires first, then waits for the rest
        self._cancel_timer()
        self._timer = self.loop.call_at(when, self._fire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _rate_due(self) -> float:
        """When the body must be in to average ``body_min_rate`` (inf: not timed)."""
        if self._phase != BODY or not self.limits.body_min_rate:
            return math.inf
        limits = self.limits
        return self._body.due(limits.body_min_rate, limits.body_rate_grace)

    def _due(self) -> tuple[float, str]:
        """When this connection must end, and why, unless it makes progress first."""
        due, reason = self._deadline, _TIMED_OUT.get(self._phase, "")
        if self._stalled is not None and self._stalled + self.limits.send_timeout < due:
            due, reason = self._stalled + self.limits.send_timeout, "send timeout"
        rate_due = self._rate_due()
        if rate_due < due:
            due, reason = rate_due, TOO_SLOW
        return due, reason

    def _fire(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase == BODY:
            self._body.paused(now, self.flow.read_paused)  # that time is not the client's
            if self.flow.read_paused and self.limits.body_timeout:
                self._deadline = now + self.limits.body_timeout  # the app is slow
        due, reason = self._due()
        if due == math.inf:
            return
        if now < due:
            self._timer = self.loop.call_at(due, self._fire)
            return
        self.guard.note(reason)
        if reason == "header timeout" and (self.cycle is None or self.cycle.response_complete):
            error = RegistryError(ErrorCode.REQUEST_TIMEOUT, "request headers took too long")
            write_error(self.transport, error, self.server_state.default_headers)
        self._deadline, self._stalled = math.inf, None
        if reason == "send timeout":
            self.transport.abort()  # what it did not take would wait in our buffers for ever
        else:
            self.transport.close()


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """``data`` into ``protocol`` as its transport would hand it over."""
    get_buffer = getattr(protocol, "get_buffer", None)
    if get_buffer is None:
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(data)
        return
    view = memoryview(data)
    while view:  # a buffered protocol, as both loops' TLS layers are
        buffer = memoryview(get_buffer(len(view)))
        count = min(len(buffer), len(view))
        buffer[:count] = view[:count]
        protocol.buffer_updated(count)  # type: ignore[attr-defined]
        view = view[count:]


def guarded_protocol(
    connections: Connections, tls: ssl.SSLContext | None = None
) -> type[GuardedProtocol]:
    """The protocol class for one server (``uvicorn.Config(http=...)``); ``tls``: the
    listener's context (then not given to uvicorn: the protocol does the handshake)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": connections, "tls": tls})
