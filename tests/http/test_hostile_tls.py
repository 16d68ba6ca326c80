"""TLS clients that end nothing: the proxy's end of their connection comes within
``server.tls_handshake_timeout`` of its decision, not asyncio's 30 s.

A connection the proxy ends (idle, headers too slow, a body stopped) is closed the TLS
way: close_notify, then the loop waits for the peer's, as long as its
``ssl_shutdown_timeout``. A hostile client never answers it (silent, or dripping the
bytes of a record that never completes, so no plaintext ever arrives), and each of its
connections was held, descriptor and cap slot, 30 s past the timeout that ended it.
The closing handshake now has the opening one's bound.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fakes.gar import FakeGAR
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.realclients import TlsFiles

IDLE, HANDSHAKE = 1, 2  # seconds: the proxy's idle and TLS handshake timeouts here
# Ended within idle + handshake (3 s) plus slack for a loaded machine; the default
# shutdown wait (30 s) is far past it.
ENDED_WITHIN = 15.0


@pytest.fixture(scope="module")
def tls_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    files = TlsFiles.issue(directory / "tls")
    fake = FakeGAR(auth="none")
    with fake.serve():
        settings = proxy_settings(
            directory, fake.upstream, tls__cert_file=str(files.cert),
            tls__key_file=str(files.key), server__idle_timeout=f"{IDLE}s",
            server__tls_handshake_timeout=f"{HANDSHAKE}s",
        )  # fmt: skip
        with run_proxy(settings) as running:
            yield running, files.ca


@contextlib.contextmanager
def _handshaken(running: RunningProxy, ca: Path) -> Iterator[tuple[socket.socket, ssl.SSLObject,
                                                                  ssl.MemoryBIO]]:  # fmt: skip
    """A raw socket whose TLS handshake is done (in memory BIOs, so the test decides
    which encrypted bytes go out, and when)."""
    port = int(running.url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context(cafile=str(ca)).wrap_bio(
        incoming, outgoing, server_hostname="127.0.0.1"
    )
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())  # the client's Finished
        yield raw, tls, outgoing
    finally:
        raw.close()


def _ended(raw: socket.socket, drip: bytes) -> float:
    """Seconds until the proxy's side is gone (EOF or reset), sending ``drip`` a byte
    per read timeout meanwhile (nothing when empty); inf past ``ENDED_WITHIN``."""
    started = time.monotonic()
    raw.settimeout(0.2)  # the pace of the drip, and how often the end is looked for
    position = 0
    while time.monotonic() - started < ENDED_WITHIN:
        try:
            if position < len(drip):
                raw.sendall(drip[position : position + 1])
                position += 1
            if raw.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: gone too
            return time.monotonic() - started
    return float("inf")


def test_a_silent_client_after_its_handshake_is_let_go(
    tls_proxy: tuple[RunningProxy, Path],
) -> None:
    running, ca = tls_proxy
    with _handshaken(running, ca) as (raw, _, _):
        assert _ended(raw, b"") < ENDED_WITHIN


def test_a_client_dripping_a_record_that_never_completes_is_let_go(
    tls_proxy: tuple[RunningProxy, Path],
) -> None:
    running, ca = tls_proxy
    with _handshaken(running, ca) as (raw, tls, outgoing):
        tls.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
        record = outgoing.read()  # more bytes than the drip sends before the end
        assert len(record) > ENDED_WITHIN / 0.2
        assert _ended(raw, record) < ENDED_WITHIN
