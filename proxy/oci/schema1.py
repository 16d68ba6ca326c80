"""The digest of a Docker image manifest v2, schema 1 (GAR supports it: docs/GAR.md N1).

A signed ("prettyjws") schema-1 manifest carries its JWS signatures inside the JSON;
distribution, and the clients that follow it, name it by the digest of the signed
payload: the bytes without the ``signatures`` member, recovered with the first
signature's protected header (``formatLength`` bytes of the document, then
``formatTail``). Which rule GAR follows is not documented (N2), so both names are
accepted for such a manifest: the payload's (distribution's) and the raw bytes'.

>>> import base64, json
>>> payload = b'{\\n   "schemaVersion": 1,\\n   "fsLayers": []\\n}'
>>> tail = base64.urlsafe_b64encode(b"\\n}").decode().rstrip("=")
>>> header = json.dumps({"formatLength": len(payload) - 2, "formatTail": tail}).encode()
>>> protected = base64.urlsafe_b64encode(header).decode().rstrip("=")
>>> signatures = b'"signatures": [{"protected": "' + protected.encode() + b'"}]'
>>> signed = payload[:-2] + b',\\n   ' + signatures + b'\\n}'
>>> signed_payload(signed) == payload
True
>>> [str(d) == str(Digest.of(payload)) for d in digests(signed, SIGNED)]
[True, False]
"""

from __future__ import annotations

import base64
import json

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest

SIGNED = mt.DOCKER_MANIFEST_V1_SIGNED
# A schema-1 manifest may come labelled only as JSON (or not at all).
_MAYBE_SCHEMA1 = mt.SCHEMA1_TYPES | {"", "application/json"}


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed_payload(body: bytes) -> bytes | None:
    """The payload a signed schema-1 manifest's signatures cover; None when ``body``
    carries no readable signature."""
    try:
        document = json.loads(body)
        protected = json.loads(_b64url(document["signatures"][0]["protected"]))
        length = int(protected["formatLength"])
        tail = _b64url(str(protected["formatTail"]))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    if not 0 < length <= len(body):
        return None
    return body[:length] + tail


def digests(body: bytes, media_type: str, algorithm: str = "sha256") -> tuple[Digest, ...]:
    """The digests a registry may name ``body`` by, the one distribution uses first."""
    raw = Digest.of(body, algorithm)
    if media_type not in _MAYBE_SCHEMA1 or b'"signatures"' not in body:
        return (raw,)
    payload = signed_payload(body)
    if payload is None:
        return (raw,)
    return (Digest.of(payload, algorithm), raw)
