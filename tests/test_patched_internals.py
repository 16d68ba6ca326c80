"""The third-party internals gar-proxy reaches into, checked loudly.

``proxy/http/server.py`` subclasses uvicorn's httptools protocol and its per-request
cycle; ``proxy/upstream/patch_h11_httpcore.py`` sets httpcore's read size and replaces one method
of h11's receive buffer. Each falls back quietly at run time if its target changed,
which would cost the speed it exists for without anyone noticing: these tests fail
instead, so an upgrade past the bounds in pyproject.toml is looked at, not absorbed.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import h11._receivebuffer
import httpcore
from uvicorn.protocols.http import httptools_impl

import proxy.upstream.client  # noqa: F401  (importing the client applies the changes)
from proxy.http import server
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
