"""Just enough of the Kubernetes CRI to ask containerd what the kubelet asks: its
version and an image pull (``runtime.v1.RuntimeService/Version``,
``runtime.v1.ImageService/PullImage``), so ``doctor --pull`` takes the kubelet's own
path through containerd (its CRI plugin, its ``config_path``), which ``ctr`` does not.

gRPC is HTTP/2 (prior knowledge, over the unix socket) with length-prefixed protobuf
messages; the two requests here are a string in a message in a message, written by
hand rather than generating stubs for the whole API. An error comes back as a
trailers-only answer (``grpc-status`` and ``grpc-message`` in the headers).

    >>> _message(1, _message(1, b"alpine"))
    b'\\n\\x08\\n\\x06alpine'
"""

from __future__ import annotations

import struct

import httpx

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


def call(socket: str, method: str, request: bytes, timeout: float = TIMEOUT) -> bytes:
    transport = httpx.HTTPTransport(uds=socket, http1=False, http2=True)
    with httpx.Client(transport=transport, timeout=timeout) as client:
        try:
            answer = client.post(
                f"http://localhost/{method}",
                content=b"\x00" + struct.pack(">I", len(request)) + request,
                headers={"content-type": "application/grpc", "te": "trailers"},
            )
        except httpx.HTTPError as error:
            raise CriError(f"{socket}: {type(error).__name__}: {error}") from None
    status = answer.headers.get("grpc-status", "0")
    if answer.status_code != 200 or status != "0":
        raise CriError(answer.headers.get("grpc-message") or f"HTTP {answer.status_code}")
    return answer.content[5:]


def version(socket: str) -> str:
    """containerd's version as its CRI plugin reports it (``1.6.20~ds1``, ``v2.1.4``)."""
    fields = _strings(call(socket, "runtime.v1.RuntimeService/Version", b"", timeout=10))
    return fields.get(3, "")


def pull(socket: str, image: str) -> str:
    """Pull ``image`` as the kubelet does; the image's digest reference, as answered."""
    request = _message(1, _message(1, image.encode()))
    return _strings(call(socket, "runtime.v1.ImageService/PullImage", request)).get(1, "")
