"""Just enough of the Kubernetes CRI to ask containerd what the kubelet asks: its
version and an image pull (``runtime.v1.RuntimeService/Version``,
``runtime.v1.ImageService/PullImage``), so ``doctor --pull`` takes the kubelet's own
path through containerd (its CRI plugin, its ``config_path``), which ``ctr`` does not.

gRPC is HTTP/2 (prior knowledge, over the unix socket; ``h2``, which httpx's HTTP/2
already brings) with length-prefixed protobuf messages; the two requests here are a
string in a message in a message, written by hand rather than generating stubs for the
whole API. The status comes in the trailers (``grpc-status``, ``grpc-message``), or in
the headers of a trailers-only error.

    >>> _message(1, _message(1, b"alpine"))
    b'\\n\\x08\\n\\x06alpine'
"""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events

TIMEOUT = 300.0


class CriError(Exception):
    pass


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _strings(payload: bytes) -> dict[int, str]:
    """The top-level length-delimited fields of a message, as text."""
    found: dict[int, str] = {}
    at = 0
    while at < len(payload):
        key, at = _read_varint(payload, at)
        if key & 7 != 2:
            raise CriError(f"unexpected protobuf wire type {key & 7}")
        size, at = _read_varint(payload, at)
        found[key >> 3] = payload[at : at + size].decode("utf-8", "replace")
        at += size
    return found


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def call(path: str, method: str, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """One unary gRPC call on the unix socket ``path``: the reply message's bytes."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            headers, body = _exchange(sock, method, request)
    except OSError as error:
        raise CriError(f"{path}: {error}") from None
    status = headers.get("grpc-status", "0")
    if headers.get(":status") != "200" or status != "0":
        raise CriError(headers.get("grpc-message") or f"HTTP {headers.get(':status')}")
    return bytes(body[5:])


def _exchange(sock: socket.socket, method: str, request: bytes) -> tuple[dict[str, str], bytes]:
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    connection = h2.connection.H2Connection(config)
    connection.initiate_connection()
    stream = connection.get_next_available_stream_id()
    connection.send_headers(stream, [
        (":method", "POST"), (":scheme", "http"), (":path", f"/{method}"),
        (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
    ])  # fmt: skip
    connection.send_data(
        stream, b"\x00" + struct.pack(">I", len(request)) + request, end_stream=True
    )
    sock.sendall(connection.data_to_send())
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            raise CriError("the runtime closed the connection")
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers.update((str(k), str(v)) for k, v in event.headers)
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                connection.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamReset):
                raise CriError(f"the runtime reset the call (error {event.error_code})")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                return headers, bytes(body)
        sock.sendall(connection.data_to_send())


def version(path: str) -> str:
    """containerd's version as its CRI plugin reports it (``1.6.20~ds1``, ``v2.1.4``)."""
    fields = _strings(call(path, "runtime.v1.RuntimeService/Version", b"", timeout=10))
    return fields.get(3, "")


def pull(path: str, image: str) -> str:
    """Pull ``image`` as the kubelet does; the image's digest reference, as answered."""
    request = _message(1, _message(1, image.encode()))
    return _strings(call(path, "runtime.v1.ImageService/PullImage", request)).get(1, "")
