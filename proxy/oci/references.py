"""What a manifest refers to: parsed when it is small, scanned when it is not.

>>> from proxy.oci.digest import Digest
>>> doc = b'{"layers": [{"digest": "sha256:' + b"a" * 64 + b'", "size": 1}]}'
>>> digests_in_chunks([doc[:20], doc[20:]]) == [Digest("sha256", "a" * 64)]
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from proxy.oci.manifest import parse_manifest

_DIGEST_FIELD = re.compile(rb'"digest"\s*:\s*"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})"')
_OVERLAP = 512  # bytes kept between reads: longer than any digest field
SCAN_READ_SIZE = 1024 * 1024


def children(body: bytes, media_type: str) -> list[Digest]:
    """The blobs and child manifests a manifest needs; none for an unknown artifact."""
    try:
        manifest = parse_manifest(body, media_type)
    except RegistryError:
        return []  # an artifact type we do not know: cache it, reference nothing
    return [d.digest for d in (*manifest.blobs, *manifest.manifests)]


def digests_in_chunks(chunks: Iterable[bytes]) -> list[Digest]:
    """Every ``"digest": "..."`` field in a document read piece by piece (config,
    layers, child manifests, and a subject, which only keeps one more blob alive).

    Never holds more than a piece and an overlap, which catches a field cut by a
    piece boundary; order of first appearance, no repeats.
    """
    found: dict[bytes, None] = {}
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        found.update((m.group(1), None) for m in _DIGEST_FIELD.finditer(window))
        tail = window[-_OVERLAP:]
    return [Digest.parse(text.decode()) for text in found]


def digests_in_file(path: Path) -> list[Digest]:
    """``digests_in_chunks`` over a file too big to parse whole, 1 MiB at a time."""
    with path.open("rb") as file:
        return digests_in_chunks(iter(lambda: file.read(SCAN_READ_SIZE), b""))
