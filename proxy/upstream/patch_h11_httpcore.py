"""Patches to httpcore and h11 internals for bulk bodies: two changes, each measured.

Blob fills receive every byte through httpcore's HTTP/1.1 connection and h11's
receive buffer. Both were built for small messages; for 256 KiB reads of a 1 GiB
body they spent CPU on copies the proxy does not need (bench/RESULTS.md):

- httpcore reads 64 KiB per call, and anyio splits each delivery of the event loop
  (up to 256 KiB) and copies the rest back into its queue. Reading 256 KiB means a
  quarter of the calls and no split copies (a 1 GiB cold fill: 3.6-4.2 s before,
  2.7-3.2 s after).
- h11's ``ReceiveBuffer.maybe_extract_at_most`` copies the buffered bytes twice to
  hand them all to the body reader (two slices, then a delete). When the reader
  takes everything buffered, which is every read of a large body, the buffer itself
  is handed over and a fresh one started: no copy, and no fresh 256 KiB allocations
  to fault in (server CPU of a cold 1 GiB fill: 3.2-3.7 s before, 2.8-3.1 s after).

Both are applied once, on import of ``proxy.upstream.client``. The h11 change is made
only if the buffer has the shape it was written against, and
``tests/upstream/test_patch_h11_httpcore.py`` checks that it returns what the original
would; ``tests/test_patched_internals.py`` that both still find their targets.
"""

from __future__ import annotations

import logging
from typing import Any

import h11._receivebuffer
import httpcore

log = logging.getLogger("gar_proxy.upstream")

READ_NUM_BYTES = 256 * 1024
_ReceiveBuffer: Any = h11._receivebuffer.ReceiveBuffer


def extract_at_most(self: Any, count: int) -> bytearray | None:
    """h11's ``maybe_extract_at_most``, without copies when it takes everything."""
    data: bytearray = self._data
    if not data or count <= 0:
        return None
    if count < len(data):
        return self._extract(count)  # type: ignore[no-any-return]  # as h11 does
    self._data = bytearray()
    self._next_line_search = 0
    self._multiple_lines_search = 0
    return data


def _shape_matches() -> bool:
    probe = _ReceiveBuffer()
    names = ("_data", "_extract", "_next_line_search", "_multiple_lines_search")
    return all(hasattr(probe, name) for name in names)


def apply() -> None:
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_NUM_BYTES
    if _shape_matches():
        _ReceiveBuffer.maybe_extract_at_most = extract_at_most
    else:  # a new h11: run as it is, a little slower
        log.debug("h11's ReceiveBuffer changed shape; its body reads are left as they are")
