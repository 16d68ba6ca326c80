"""A counting TCP relay: what the proxies fetch from upstream, in bytes on the wire.

Both proxies reach the upstream through one relay, so "bytes fetched upstream" is
measured the same way for each, below HTTP. It runs as its own process and prints one
line when ready::

    python -m bench.relay --target 127.0.0.1:5000
    relay listening on 127.0.0.1:41234 control 127.0.0.1:41235

A connection to the control port that sends ``get`` (or ``reset``) reads back
``<bytes to upstream> <bytes from upstream> <connections>`` (``reset`` zeroes them after).

Each direction of a relayed connection is a thread moving bytes with ``splice(2)``
through a pipe, so they never enter user space: the relay costs little CPU on a
machine whose cores the proxies and the client share, and the cost does not grow
with Python or event-loop overhead (the relay carries 8x the bytes for a proxy that
does not deduplicate concurrent fetches).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import socket
import threading
from collections.abc import Callable

PIPE_SIZE = 1024 * 1024
READ_SIZE = 1024 * 1024


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.up = self.down = self.connections = 0

    def add(self, *, up: int = 0, down: int = 0, connections: int = 0) -> None:
        with self.lock:
            self.up += up
            self.down += down
            self.connections += connections

    def line(self, reset: bool) -> bytes:
        with self.lock:
            text = f"{self.up} {self.down} {self.connections}\n"
            if reset:
                self.up = self.down = self.connections = 0
        return text.encode()


def _spliced(source: socket.socket, sink: socket.socket, count: Callable[[int], None]) -> None:
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    try:
        while moved := os.splice(source.fileno(), write_end, READ_SIZE):
            count(moved)
            while moved:
                moved -= os.splice(read_end, sink.fileno(), moved)
    finally:
        os.close(read_end)
        os.close(write_end)


def _copied(source: socket.socket, sink: socket.socket, count: Callable[[int], None]) -> None:
    buffer = memoryview(bytearray(READ_SIZE))
    while received := source.recv_into(buffer):
        count(received)
        sink.sendall(buffer[:received])


def _pump(source: socket.socket, sink: socket.socket, count: Callable[[int], None]) -> None:
    """One direction until EOF or an error, then half-close the other side."""
    move = _spliced if hasattr(os, "splice") else _copied
    with contextlib.suppress(OSError):
        move(source, sink, count)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, target: tuple[str, int], counters: Counters) -> None:
    counters.add(connections=1)
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    for sock in (client, upstream):
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(
        target=_pump, args=(upstream, client, lambda n: counters.add(down=n)), daemon=True
    )
    back.start()
    _pump(client, upstream, lambda n: counters.add(up=n))
    back.join()
    client.close()
    upstream.close()


def _serve_control(server: socket.socket, counters: Counters) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.recv(64).strip()
            conn.sendall(counters.line(reset=command == b"reset"))


def _listen() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    return server


def serve(target: str) -> None:
    host, _, port = target.rpartition(":")
    counters = Counters()
    relay, control = _listen(), _listen()
    threading.Thread(target=_serve_control, args=(control, counters), daemon=True).start()
    print(
        f"relay listening on 127.0.0.1:{relay.getsockname()[1]} "
        f"control 127.0.0.1:{control.getsockname()[1]}",
        flush=True,
    )
    while True:
        client, _ = relay.accept()
        threading.Thread(
            target=_relay, args=(client, (host, int(port)), counters), daemon=True
        ).start()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # daemon threads: just go
    serve(args.target)


if __name__ == "__main__":
    main()
