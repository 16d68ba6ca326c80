"""A large cache generated straight into the layout and index the proxy built.

The schema comes from the proxy's own code (``CacheIndex.open``, ``BlobStore``); the
rows are then bulk-inserted in one transaction and the blob files written directly,
so 100k blobs take seconds, not a pull each. Every file holds bytes that hash to its
name, so recovery and ``verify`` see an honest cache::

    cache = generate(tmp / "cache", blobs=10_000, tags=1_000)
    cache.blob_paths[0]       # /v2/scale/r/app-000/blobs/sha256:...
    cache.tag_paths[0]        # /v2/scale/r/app-000/manifests/t0
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.cache.index import CacheIndex
from proxy.cache.store import BlobStore
from proxy.oci import mediatypes as mt

REPOS = 100
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
MANIFEST_TYPE = mt.OCI_MANIFEST
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class ScaleCache:
    root: Path
    blobs: int
    tags: int
    blob_bytes: int = 0
    blob_paths: list[str] = field(default_factory=list)
    tag_paths: list[str] = field(default_factory=list)
    seconds: float = 0.0


def repo_name(n: int) -> str:
    return f"scale/r/app-{n % REPOS:03d}"


async def _schema(root: Path) -> None:
    index = await CacheIndex.open(root / "index.sqlite3")
    await index.close()


def _write_range(blobs: Path, start: int, stop: int) -> list[tuple[str, int]]:
    written = []
    for n in range(start, stop):
        body = b"scale blob %d\n" % n
        hex_digest = hashlib.sha256(body).hexdigest()
        try:  # O_EXCL: a refill after gc writes only what gc removed
            fd = os.open(blobs / hex_digest[:2] / hex_digest, CREATE, 0o644)
        except FileExistsError:
            fd = -1
        if fd >= 0:
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
        written.append((f"sha256:{hex_digest}", len(body)))
    return written


def _write_blobs(store: BlobStore, count: int) -> list[tuple[str, int, float]]:
    """The blob files, tiny and distinct; (digest, size, last access) rows. One thread:
    four measured slower here (file creation serialises in the filesystem's journal)."""
    blobs = store.blobs / "sha256"
    for prefix in range(256):
        (blobs / f"{prefix:02x}").mkdir(parents=True, exist_ok=True)
    now = time.time()
    # Older blobs were read longer ago: eviction takes the low numbers first.
    return [
        (digest, size, now - count + n)
        for n, (digest, size) in enumerate(_write_range(blobs, 0, count))
    ]


def _manifest(config: tuple[str, int], layer: tuple[str, int], n: int) -> bytes:
    def descriptor(blob: tuple[str, int], media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": blob[0], "size": blob[1]}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptor(config, mt.OCI_CONFIG),
            "layers": [descriptor(layer, LAYER_TYPE)],
            "annotations": {"scale.n": str(n)},
        },
        separators=(",", ":"),
    ).encode()


def generate(root: Path, *, blobs: int, tags: int) -> ScaleCache:
    """``blobs`` cached blobs in ``REPOS`` repositories and ``tags`` tags, each on its
    own manifest whose config and layer are two of those blobs. Run again on the same
    ``root`` it puts back what ``gc`` removed (and writes only the missing files)."""
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    asyncio.run(_schema(root))
    store = BlobStore(root)
    rows = _write_blobs(store, blobs)
    total = sum(size for _, size, _ in rows)
    now = time.time()
    scopes = [(repo_name(n), digest) for n, (digest, _, _) in enumerate(rows)]
    manifests, refs, tag_rows = [], [], []
    for n in range(tags):
        config, layer = rows[(2 * n) % blobs], rows[(2 * n + 1) % blobs]
        body = _manifest(config[:2], layer[:2], n)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        repo = repo_name(n)
        manifests.append((digest, MANIFEST_TYPE, len(body), body, now))
        refs += [(digest, config[0]), (digest, layer[0])]
        tag_rows.append((repo, f"t{n}", digest, MANIFEST_TYPE, now, now))
        scopes.append((repo, digest))
    db = sqlite3.connect(root / "index.sqlite3")
    try:
        with db:  # one transaction
            db.executemany(
                "INSERT OR REPLACE INTO blobs (digest, size, created, last_access)"
                " VALUES (?, ?, ?, ?)",
                [(digest, size, when, when) for digest, size, when in rows],
            )
            db.executemany(
                "INSERT OR IGNORE INTO manifests (digest, media_type, size, body, created)"
                " VALUES (?, ?, ?, ?, ?)",
                manifests,
            )
            db.executemany("INSERT OR IGNORE INTO manifest_refs VALUES (?, ?)", refs)
            db.executemany(
                "INSERT OR REPLACE INTO tags (repo, tag, digest, media_type, fetched, verified)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                tag_rows,
            )
            db.executemany("INSERT OR IGNORE INTO repo_digests VALUES (?, ?)", scopes)
    finally:
        db.close()
    cache = ScaleCache(root, blobs, tags, total, seconds=time.perf_counter() - started)
    cache.blob_paths = [f"/v2/{repo}/blobs/{digest}" for repo, digest in scopes[:blobs]]
    cache.tag_paths = [f"/v2/{repo}/manifests/{tag}" for repo, tag, *_ in tag_rows]
    return cache
