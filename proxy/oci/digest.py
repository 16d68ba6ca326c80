"""Content digests (``sha256:<hex>``) and a streaming verifier.

>>> d = Digest.parse("sha256:" + "a" * 64)
>>> d.algorithm, len(d.hex)
('sha256', 64)
>>> v = Digest.of(b"hello").verifier()
>>> v.update(b"hel"); v.update(b"lo"); v.verify()   # raises DIGEST_INVALID on a mismatch
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from proxy.oci.errors import ErrorCode, RegistryError

# Registered algorithms of the OCI image spec and the length of their lowercase hex.
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")
# The digest grammar of the image spec; anything matching it with an unknown algorithm
# is "unsupported", anything else "invalid".
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not _GRAMMAR.fullmatch(text):
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"malformed digest {text[:150]!r}")
        algorithm, _, hex_part = text.partition(":")
        expected = _HEX_LENGTH.get(algorithm)
        if expected is None:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"unsupported digest algorithm {algorithm!r} (use sha256 or sha512)",
            )
        if len(hex_part) != expected or not _HEX.fullmatch(hex_part):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"{algorithm} digest needs {expected} lowercase hex characters",
            )
        return cls(algorithm, hex_part)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @staticmethod
    def is_digest(text: str) -> bool:
        """True when a manifest reference looks like a digest rather than a tag."""
        return ":" in text

    def verifier(self) -> DigestVerifier:
        return DigestVerifier(self)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class DigestVerifier:
    """Hashes bytes as they pass; ``verify()`` raises if they are not what was promised."""

    __slots__ = ("_hash", "expected", "size")

    def __init__(self, expected: Digest) -> None:
        self.expected = expected
        self._hash = hashlib.new(expected.algorithm)
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def actual(self) -> Digest:
        return Digest(self.expected.algorithm, self._hash.hexdigest())

    def matches(self) -> bool:
        return self._hash.hexdigest() == self.expected.hex

    def verify(self) -> None:
        if not self.matches():
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"content does not match digest {self.expected}",
                detail={"expected": str(self.expected), "actual": str(self.actual())},
            )
