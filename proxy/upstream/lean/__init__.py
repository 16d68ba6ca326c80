"""The lean blob path: blob GET bodies read straight into large batches, upload bodies
written straight from the client's pieces.

What it does. A second, small HTTP/1.1 client under httpx, for two kinds of request:
the blob GET a cache fill makes, and the streamed ``PATCH``/``PUT`` of an upstream
upload session. ``LeanTransport`` is the transport of the pooled
``httpx.AsyncClient`` in ``proxy.upstream.client``, so the control path stays httpx's
(auth headers, retries, redirects to GAR's signed storage URLs, error answers). A
request marked with the ``LEAN`` extension (``RegistryClient.open_blob``) is written
and its head parsed by ``h11`` on a connection of the lean pool's own; a 200 body with
a Content-Length is received by ``wire.Wire`` (an ``asyncio.BufferedProtocol``) into
4 MiB ``bytearray`` batches (2 MiB under 256 MiB) and handed over whole. A request
marked ``SEND`` (``registry_uploads._session``, a body that is an async iterable) has
its body written piece by piece by ``sending.send``: h11 frames each piece around the
caller's own bytes, the loop's transport takes them with its write flow control, and
the answer is read as above. Every other request goes to the inner httpx transport
unchanged. It exists for the event loop's CPU: a cold 1 GiB fill cost the loop
2.8-3.3 s through httpx and 0.9-1.0 s here (``docs/DESIGN.md``, "Receiving a blob
body: the lean path"); a 1 GiB push cost it 2.7 s per GiB through httpx and 2.1-2.5 s
here ("Sending an upload body").

When it is off. ``transport.lean_bodies = false``, or an egress proxy in the
environment (``HTTP(S)_PROXY``, ``ALL_PROXY``: a transport of our own would switch
httpx's proxy support off): then ``client.Upstream`` does not install it and blob
bodies take httpx's path like every other call. Nothing else changes: failures are
httpx's exceptions (``ReadTimeout``, ``RemoteProtocolError``, ``ConnectTimeout``,
``WriteError``, ``WriteTimeout``), so ``proxy.upstream.errors`` translates them as
before; an upload's early answer (401, 403, 413 before the body ended) is its response,
as through httpcore (which loses it when its next write meets the upstream's reset).

What it owns.

- ``transport.py``: ``LeanTransport``. The idle pool (per origin at most
  ``IDLE_PER_ORIGIN``; across origins at most ``max_idle``, the oldest closed first;
  an idle connection older than ``idle_expiry`` on the injected clock is closed, not
  reused), the slots that bound blob bodies in flight (``transport.max_connections``),
  the one retry of a reused connection the server had closed, connect timeouts, TCP
  keep-alive (``proxy.upstream.sockets``), its TLS context (HTTP/1.1 in ALPN). A
  streamed body takes a pooled connection only if its socket has nothing unread, and
  is never retried (it cannot be sent twice).
- ``sending.py``: an upload body, piece by piece, up to its end or the upstream's
  early answer; ``WriteTimeout`` when the transport stays paused.
- ``bodies.py``: the two bodies a response has: ``DirectBody`` (batches; handed over
  in parts after 20 ms when the upstream is slow; ``recycle`` takes a batch back) and
  ``ParsedBody`` (chunked, close-delimited and error bodies, parsed by ``h11``).
- ``wire.py``: ``Wire``, one connection: batch memory, read pausing (one full batch
  waiting, or 256 KiB not parsed), write pausing (``WRITE_HIGH`` unsent), a poll of
  the socket for what the loop has not read yet, and an idle connection that
  receives a byte being dropped.

How it is tested. ``tests/upstream/test_lean.py`` against the fake GAR on loopback,
plain and TLS, on asyncio's loop and uvloop (bytes, batch sizes, reuse, redirects,
chunked and encoded bodies, faults as httpx errors, a proxy fill over TLS);
``tests/upstream/test_lean_bounds.py`` for the bounds against a faulty or hostile
server (unsolicited bytes, a slow reader of a chunked body, the slot limit, the idle
pool's cap and expiry, the TLS host name); ``tests/upstream/test_lean_send.py`` for
upload bodies against a loopback server, plain and TLS (bytes as sent chunked or under
a Content-Length, early 401/413, a reset, a reader that stops, reuse, a stale pooled
connection, a body that fails); every end-to-end pull and push in the suite runs over
it, since it is on by default.
"""

from __future__ import annotations

from proxy.upstream.lean.bodies import DirectBody, ParsedBody
from proxy.upstream.lean.transport import BODY, LEAN, SEND, LeanTransport, lean_ssl_context

__all__ = [
    "BODY", "LEAN", "SEND", "DirectBody", "LeanTransport", "ParsedBody", "lean_ssl_context",
]  # fmt: skip
