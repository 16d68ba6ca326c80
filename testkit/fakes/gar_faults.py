"""How the fake GAR carries out the faults added with ``FakeGAR.add_fault``.

``FaultsMixin`` finds and claims the ``Fault`` matching a request, answers with an
injected registry error, and delays, slows, corrupts or cuts a successful response body
on its way out; the module-level helpers cut the connection under uvicorn (a close, or
an abort with ``SO_LINGER`` 0 for a reset) and tell the ASGI entry that a cut happened.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Send

from testkit.fakes.gar_model import _FAULT_CODES, Fault, _ApiError, _Route


class _Cut(Exception):
    """Raised through the app once a fault has cut the connection."""


def _is_cut(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_is_cut(e) for e in error.exceptions)
    return isinstance(error, _Cut)


def _sock_transport(send: Send) -> asyncio.Transport | None:
    """uvicorn's transport behind ``send`` (its cycle's bound method), to cut connections."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if hasattr(transport, "abort") else None


async def _cut(send: Send, *, reset: bool) -> None:
    transport = _sock_transport(send)
    if transport is None:
        raise ConnectionResetError("fault: connection cut")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    # Let uvicorn see the disconnect, so it does not complain about an unfinished response.
    cycle = getattr(send, "__self__", None)
    for _ in range(400):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0.005)


def _reencode_start(message: Message, fault: Fault, state: dict[str, Any]) -> Message:
    """Response headers for a ``chunked`` or ``gzip`` fault: no Content-Length (the body
    goes chunked), and ``Content-Encoding: gzip`` with a compressor for the body."""
    if not (fault.chunked or fault.gzip):
        return message
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
    if fault.gzip:
        headers.append((b"content-encoding", b"gzip"))
        state["gzip"] = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    return {**message, "headers": headers}


REDIRECTED = "/_redirected"  # where a ``redirect`` fault sends the client (same host)


class FaultsMixin:
    """Fault matching and delivery; part of ``FakeGAR``."""

    # Provided by FakeGAR and its other mixins.
    _lock: threading.RLock
    _faults: list[Fault]
    _challenge: Callable[[Request, _Route], str]

    def _claim(self, fault: Fault) -> bool:
        with self._lock:
            if fault.times is not None and fault.times <= 0:
                return False
            if fault.times is not None:
                fault.times -= 1
            fault.hits += 1
            return True

    def _find_faults(
        self, method: str, route: _Route, path: str, *, body_only: bool = False
    ) -> tuple[Fault | None, Fault | None]:
        """The first matching fault acting now, and the first acting on a response body
        (only that with ``body_only``: a signed download acts out its blob GET's body)."""
        now: Fault | None = None
        on_body: Fault | None = None
        with self._lock:
            live = [f for f in self._faults if f.times is None or f.times > 0]
        for fault in live:
            if not fault.matches(method, route.kind, path, route.location):
                continue
            if fault.acts_on_body:
                if on_body is None and method != "HEAD":
                    on_body = fault
            elif now is None and not body_only and self._claim(fault):
                now = fault
        return now, on_body

    def _wrap_send(self, send: Send, route: _Route, fault: Fault | None) -> Send:
        api_version = route.kind not in ("metadata", "other")
        state = {"active": False, "sent": 0, "corrupted": False}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                if api_version:
                    headers = list(message.get("headers", []))
                    headers.append((b"docker-distribution-api-version", b"registry/2.0"))
                    message = {**message, "headers": headers}
                if fault and 200 <= message["status"] < 300 and self._claim(fault):
                    state["active"] = True
                    message = _reencode_start(message, fault, state)
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
            elif message["type"] == "http.response.body" and fault and state["active"]:
                message = await self._fault_body(message, fault, state, send)
            await send(message)

        return wrapped

    async def _fault_body(
        self, message: Message, fault: Fault, state: dict[str, Any], send: Send
    ) -> Message:
        body = bytes(message.get("body", b""))
        compressor = state.get("gzip")
        if compressor is not None:  # after the other faults: they act on the plain bytes
            body = compressor.compress(body)
            if not message.get("more_body", False):
                body += compressor.flush()
        if fault.slow_body:
            await asyncio.sleep(fault.slow_body)
        if fault.corrupt and body and not state["corrupted"]:
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            body, state["corrupted"] = bytes(flipped), True
        if fault.truncate_at is not None:
            room = fault.truncate_at - state["sent"]
            if len(body) > room:
                if room > 0:
                    await send(
                        {"type": "http.response.body", "body": body[:room], "more_body": True}
                    )
                await _cut(send, reset=fault.reset)
                raise _Cut
        state["sent"] += len(body)
        return {**message, "body": body}

    def _fault_response(self, fault: Fault, request: Request, route: _Route) -> Response:
        if fault.redirect:
            target = REDIRECTED + request.url.path
            if request.url.query:
                target += "?" + request.url.query
            return Response(b"", 307, {"Location": target})
        status = fault.status or 500
        code = _FAULT_CODES.get(status, "UNKNOWN")
        if status == 404:
            code = {"manifest": "MANIFEST_UNKNOWN", "blob": "BLOB_UNKNOWN"}.get(
                route.kind, "NAME_UNKNOWN"
            )
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if status == 401 and route.location:
            headers["WWW-Authenticate"] = self._challenge(request, route)
        return _ApiError(status, code, f"injected fault ({status})", headers).response()
