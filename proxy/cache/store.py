"""Content-addressed blob files: ``ROOT/blobs/<alg>/<ab>/<hex>``, temp files in ``ROOT/tmp``.

A file appears under ``blobs/`` only by ``os.replace`` of a temp file whose bytes
were hashed on the way in and matched, so a path that exists holds verified content.
Everything here is synchronous, quick filesystem metadata work, except ``rehash``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from proxy.oci.digest import Digest

READ_SIZE = 1024 * 1024


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.hex[:2] / digest.hex

    def size(self, digest: Digest) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def new_temp(self) -> Path:
        return self.tmp / secrets.token_hex(16)

    def commit(self, temp: Path, digest: Digest) -> Path:
        """Move a verified temp file into place (atomic; an existing copy is equal)."""
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        return final

    def remove(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def clean_temp(self) -> int:
        """Remove leftovers of fills that a crash interrupted; returns how many."""
        removed = 0
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def iter_blobs(self) -> Iterator[tuple[Digest, Path]]:
        for algorithm_dir in self.blobs.iterdir():
            for prefix_dir in algorithm_dir.iterdir():
                for path in prefix_dir.iterdir():
                    yield Digest(algorithm_dir.name, path.name), path

    @staticmethod
    def rehash(path: Path, algorithm: str) -> str:
        hasher = hashlib.new(algorithm)
        with path.open("rb") as file:
            while chunk := file.read(READ_SIZE):
                hasher.update(chunk)
        return hasher.hexdigest()
