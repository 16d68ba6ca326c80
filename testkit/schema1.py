"""Docker image manifest v2, schema 1 for tests: signed as libtrust signs it, or not.

A signed ("prettyjws") manifest is the payload with a ``signatures`` member spliced
in before its closing brace; each signature's protected header says how to get the
payload back (``formatLength`` bytes, then ``formatTail``). Registries following
distribution name the manifest by the payload's digest (docs/GAR.md N2)::

    old = build_schema1("proj/repo/app", "v1", [layer])
    old.manifest            # the bytes served and pushed
    old.canonical_digest    # sha256 of the payload: distribution's Docker-Content-Digest
    old.raw_digest          # sha256 of the bytes as served
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
UNSIGNED = "application/vnd.docker.distribution.manifest.v1+json"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Schema1:
    manifest: bytes = field(repr=False)
    media_type: str
    layers: tuple[bytes, ...] = field(repr=False)
    payload: bytes = field(repr=False)

    @property
    def canonical_digest(self) -> str:
        return _sha(self.payload)

    @property
    def raw_digest(self) -> str:
        return _sha(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [_sha(layer) for layer in self.layers]


def _payload(name: str, tag: str, layers: list[bytes]) -> bytes:
    # Schema 1 lists layers newest first, one v1Compatibility entry each.
    ids = [hashlib.sha256(f"{name}:{tag}:{i}".encode()).hexdigest() for i in range(len(layers))]
    history = [
        {
            "v1Compatibility": json.dumps(
                {"id": ids[i], "parent": ids[i - 1]} if i else {"id": ids[i]}
            )
        }
        for i in range(len(layers))
    ]
    doc = {
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": _sha(layer)} for layer in reversed(layers)],
        "history": list(reversed(history)),
    }
    return json.dumps(doc, indent=3).encode()


def _sign(payload: bytes) -> dict[str, object]:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    tail = b"\n}"
    protected = _b64(
        json.dumps(
            {
                "formatLength": len(payload) - len(tail),
                "formatTail": _b64(tail),
                "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()
    )
    signing_input = f"{protected}.{_b64(payload)}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }
    return {
        "header": {"jwk": jwk, "alg": "ES256"},
        "signature": _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")),
        "protected": protected,
    }


def build_schema1(name: str, tag: str, layers: list[bytes], *, signed: bool = True) -> Schema1:
    payload = _payload(name, tag, layers)
    if not signed:
        return Schema1(payload, UNSIGNED, tuple(layers), payload)
    signatures = json.dumps([_sign(payload)], indent=3).replace("\n", "\n   ")
    manifest = payload[:-2] + b',\n   "signatures": ' + signatures.encode() + b"\n}"
    return Schema1(manifest, SIGNED, tuple(layers), payload)
