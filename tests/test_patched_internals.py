"""The third-party internals gar-proxy reaches into, checked loudly.

``proxy/http/server.py`` subclasses uvicorn's httptools protocol and its per-request
cycle; ``proxy/commands/serve.py`` clears uvicorn's captured signals;
``proxy/http/responses.py`` overrides starlette's ``StreamingResponse.stream_response``;
``proxy/upstream/patch_h11_httpcore.py`` sets httpcore's read size and replaces one
method of h11's receive buffer; ``proxy/upstream/lean/`` implements httpx's transport
and byte-stream interfaces. A changed target would make each fall back quietly (costing
the speed it exists for without anyone noticing) or fail only under a real client:
these tests fail instead, so an upgrade past the bounds in pyproject.toml is looked
at, not absorbed.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import h11._receivebuffer
import httpcore
import httpx
import uvicorn
from starlette.responses import StreamingResponse
from uvicorn.protocols.http import httptools_impl

import proxy.upstream.client  # noqa: F401  (importing the client applies the changes)
from proxy.http import responses, server
from proxy.upstream import patch_h11_httpcore


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def test_h11_receive_buffer_has_the_shape_the_change_was_written_against() -> None:
    assert patch_h11_httpcore._shape_matches()
    patched = h11._receivebuffer.ReceiveBuffer.maybe_extract_at_most
    assert patched is patch_h11_httpcore.extract_at_most
    assert version("h11").startswith("0.16.")


def test_httpcore_reads_blob_bodies_in_large_pieces() -> None:
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == patch_h11_httpcore.READ_NUM_BYTES
    from httpcore._async import http11 as module

    assert "self.READ_NUM_BYTES" in _source(module), "httpcore no longer reads READ_NUM_BYTES"


def test_uvicorn_cycle_has_what_the_zero_copy_send_uses() -> None:
    cycle = _source(httptools_impl.RequestResponseCycle)
    for name in (
        "self.flow",
        "self.transport",
        "self.disconnected",
        "self.response_started",
        "self.response_complete",
        "self.chunked_encoding",
        "self.expected_content_length",
        "self.message_event",
        "async def send(",
    ):
        assert name in cycle, f"uvicorn's RequestResponseCycle no longer has {name}"
    protocol = _source(httptools_impl.HttpToolsProtocol)
    for name in ("def on_headers_complete(", "self.cycle", "self.scope", "def connection_made("):
        assert name in protocol, f"uvicorn's HttpToolsProtocol no longer has {name}"
    assert issubclass(server.ZeroCopyCycle, httptools_impl.RequestResponseCycle)


def test_uvicorn_protocol_has_the_hooks_the_header_cap_uses() -> None:
    """``ZeroCopyProtocol`` counts header bytes in httptools' callbacks and answers 431
    in place of uvicorn's 400 (``proxy/http/server.py``)."""
    protocol = _source(httptools_impl.HttpToolsProtocol)
    for name in (
        "def data_received(",
        "def on_message_begin(",
        "def on_url(",
        "def on_header(",
        "def on_message_complete(",
        "def send_400_response(",
        "self.send_400_response(",  # a parser error, ours included, ends there
        "self.server_state.default_headers",
        "self.logger",
        "self.loop",
    ):
        assert name in protocol, f"uvicorn's HttpToolsProtocol no longer has {name}"


def test_uvicorn_server_re_raises_captured_signals_from_the_list_serve_clears() -> None:
    """``gar-proxy serve`` clears ``Server._captured_signals`` inside
    ``capture_signals`` so that a drained SIGTERM exits 0, not 143
    (``proxy/commands/serve.py``); and it overrides ``startup(sockets)``."""
    capture = _source(uvicorn.Server.capture_signals)
    assert "yield" in capture and "self._captured_signals" in capture
    assert capture.index("yield") < capture.index("signal.raise_signal")
    server = uvicorn.Server(uvicorn.Config(app="proxy.app:create_app"))
    assert server._captured_signals == []
    assert "sockets" in inspect.signature(uvicorn.Server.startup).parameters
    assert hasattr(server, "started")


def test_starlette_streaming_response_sends_through_the_method_we_override() -> None:
    """``CutResponse`` overrides ``StreamingResponse.stream_response(send)`` to end a
    body cut short quietly, and ``FileBodyResponse`` sends ``raw_headers`` itself
    (``proxy/http/responses.py``)."""
    call = _source(StreamingResponse.__call__)
    assert "self.stream_response(send)" in call or "self.stream_response, send" in call
    assert list(inspect.signature(StreamingResponse.stream_response).parameters) == [
        "self",
        "send",
    ]
    assert isinstance(StreamingResponse(iter(())).raw_headers, list)
    assert issubclass(responses.FileBodyResponse, StreamingResponse)


def test_httpx_hands_a_transport_the_timeouts_the_lean_path_reads() -> None:
    """``LeanTransport`` reads the per-phase limits from ``request.extensions``."""
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)) as client:
        request = client.build_request("GET", "http://127.0.0.1:9/")
    limits = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    assert request.extensions["timeout"] == limits
    assert callable(getattr(httpx.AsyncBaseTransport, "handle_async_request", None))
    assert callable(getattr(httpx.AsyncByteStream, "aclose", None))


def test_uvicorn_request_body_is_grown_measured_and_taken_as_pieces_expects() -> None:
    # server._Pieces stands in for the cycle's bytearray: uvicorn must only grow it with
    # ``+=``, measure it with ``len`` and take it with ``bytes()``, resetting it after.
    on_body = _source(httptools_impl.HttpToolsProtocol.on_body)
    assert "self.cycle.body += body" in on_body
    assert "len(self.cycle.body)" in on_body
    receive = _source(httptools_impl.RequestResponseCycle.receive)
    assert '"body": bytes(self.body)' in receive
    assert "self.body = bytearray()" in receive
