"""The images the benchmark pulls, generated and pushed to the upstream registry.

Large layers are real gzip'd tars (stored deflate blocks over pseudo-random bytes, so
skopeo or docker would accept them) written to a file in one streaming pass that
hashes both the compressed and the uncompressed stream, then uploaded from that file:
a 1 GiB layer never sits in memory. Small images come from ``testkit.images``::

    corpus = populate("http://127.0.0.1:5000", workdir, PROFILES["full"])
    corpus.big.blobs      # config + 5 layers, ~256 MiB
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from proxy.oci import mediatypes as mt
from testkit.images import Image, Index, build_image, build_index, make_layer, push_image

MiB = 1024 * 1024
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_POOL = 16 * MiB
_PIECE = 1 * MiB
_MTIME = 1_700_000_000


@dataclass(frozen=True)
class Profile:
    """How big the generated images are: ``full`` is the documented benchmark."""

    name: str
    big_layers_mib: tuple[int, ...]  # the multi-layer image
    huge_mib: int  # the single-layer image read by the throughput scenario
    small_images: int  # tags for the manifest HEAD scenario


PROFILES = {
    "full": Profile("full", (96, 64, 48, 32, 16), 1024, 200),
    "quick": Profile("quick", (16, 8, 8, 4, 4), 128, 20),
    "smoke": Profile("smoke", (2, 1, 1, 1, 1), 8, 4),
}


@dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ImageRef:
    repo: str
    tag: str
    digest: str
    blobs: tuple[BlobRef, ...]  # config first

    @property
    def blob_bytes(self) -> int:
        return sum(b.size for b in self.blobs)


@dataclass(frozen=True)
class Corpus:
    big: ImageRef  # several layers
    huge: ImageRef  # one large layer
    multi: ImageRef  # an index; blobs are those of its linux/amd64 image
    small: tuple[ImageRef, ...]


def _random_pieces(size: int, seed: int) -> Iterator[bytes]:
    # Windows of a random pool at random offsets: incompressible, at memcpy speed.
    rng = random.Random(seed)
    pool = rng.randbytes(min(_POOL, max(size, _PIECE)))
    left = size
    while left > 0:
        piece = min(left, _PIECE, len(pool))
        offset = rng.randrange(len(pool) - piece + 1)
        yield pool[offset : offset + piece]
        left -= piece


def _tar_pieces(size: int, seed: int) -> Iterator[bytes]:
    info = tarfile.TarInfo(f"random-{seed}.bin")
    info.size, info.mtime, info.mode = size, _MTIME, 0o644
    yield info.tobuf(tarfile.PAX_FORMAT)
    yield from _random_pieces(size, seed)
    yield bytes(-size % 512) + bytes(1024)


def write_layer(path: Path, size: int, seed: int) -> tuple[BlobRef, str]:
    """A gzip'd tar holding ``size`` random bytes, written to ``path``; (blob, diff_id)."""
    compressor = zlib.compressobj(0, zlib.DEFLATED, 31)
    compressed, uncompressed = hashlib.sha256(), hashlib.sha256()
    written = 0
    with path.open("wb") as out:
        for piece in _tar_pieces(size, seed):
            uncompressed.update(piece)
            data = compressor.compress(piece)
            compressed.update(data)
            written += out.write(data)
        tail = compressor.flush()
        compressed.update(tail)
        written += out.write(tail)
    blob = BlobRef("sha256:" + compressed.hexdigest(), written, LAYER_GZIP)
    return blob, "sha256:" + uncompressed.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(4 * MiB):
            yield chunk


def _upload(client: httpx.Client, base: str, repo: str, digest: str, body: Any, size: int) -> None:
    if client.head(f"{base}/v2/{repo}/blobs/{digest}").status_code == 200:
        return
    started = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    started.raise_for_status()
    location = started.url.join(started.headers["location"]).copy_merge_params({"digest": digest})
    headers = {"Content-Type": mt.OCTET_STREAM, "Content-Length": str(size)}
    client.put(location, content=body, headers=headers).raise_for_status()


def _put_manifest(client: httpx.Client, base: str, repo: str, ref: str, body: bytes) -> str:
    headers = {"Content-Type": mt.OCI_MANIFEST}
    url = f"{base}/v2/{repo}/manifests/{ref}"
    client.put(url, content=body, headers=headers).raise_for_status()
    return "sha256:" + hashlib.sha256(body).hexdigest()


def push_streamed_image(
    base: str, repo: str, tag: str, sizes_mib: tuple[int, ...], seed: int, scratch: Path
) -> ImageRef:
    """Generate each layer to ``scratch``, upload it, delete it; then config and manifest."""
    scratch.mkdir(parents=True, exist_ok=True)
    layers: list[BlobRef] = []
    diff_ids: list[str] = []
    with httpx.Client(timeout=600) as client:
        for n, size in enumerate(sizes_mib):
            path = scratch / f"layer-{seed}-{n}"
            blob, diff_id = write_layer(path, size * MiB, seed * 100 + n)
            _upload(client, base, repo, blob.digest, _file_chunks(path), blob.size)
            path.unlink()
            layers.append(blob)
            diff_ids.append(diff_id)
        config_body = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "config": {"Cmd": ["/bin/sh"]},
            },
            separators=(",", ":"),
        ).encode()
        config = BlobRef(
            "sha256:" + hashlib.sha256(config_body).hexdigest(), len(config_body), mt.OCI_CONFIG
        )
        _upload(client, base, repo, config.digest, config_body, config.size)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor() for layer in layers],
            },
            separators=(",", ":"),
        ).encode()
        digest = _put_manifest(client, base, repo, tag, manifest)
    return ImageRef(repo, tag, digest, (config, *layers))


def _ref(repo: str, tag: str, image: Image | Index, amd64: Image) -> ImageRef:
    blobs = tuple(BlobRef(b.digest, b.size, b.media_type) for b in amd64.blobs)
    return ImageRef(repo, tag, image.digest, blobs)


def save(corpus: Corpus, path: Path, profile: Profile) -> None:
    path.write_text(json.dumps({"profile": profile.name, "corpus": dataclasses.asdict(corpus)}))


def load(path: Path, profile: Profile) -> Corpus | None:
    """A corpus saved by an earlier run with the same profile, if any."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("profile") != profile.name:
        return None

    def image(raw: dict[str, Any]) -> ImageRef:
        blobs = tuple(BlobRef(**b) for b in raw["blobs"])
        return ImageRef(raw["repo"], raw["tag"], raw["digest"], blobs)

    raw = saved["corpus"]
    return Corpus(
        image(raw["big"]), image(raw["huge"]), image(raw["multi"]),
        tuple(image(i) for i in raw["small"]),
    )  # fmt: skip


def populate(base: str, scratch: Path, profile: Profile) -> Corpus:
    """Push every benchmark image to the registry at ``base`` (plain HTTP)."""
    big = push_streamed_image(base, "bench/big", "v1", profile.big_layers_mib, 1, scratch)
    huge = push_streamed_image(base, "bench/huge", "v1", (profile.huge_mib,), 2, scratch)
    platforms = [("amd64", None), ("arm64", "v8"), ("arm", "v7"), ("s390x", None)]
    images = [
        build_image([make_layer(seed=10 + n), make_layer(size=MiB, seed=20 + n)],
                    architecture=arch, variant=variant)
        for n, (arch, variant) in enumerate(platforms)
    ]  # fmt: skip
    index = build_index(images)
    push_image(base, "bench/multi", "v1", index)
    small = []
    for n in range(profile.small_images):
        image = build_image([make_layer({"id": f"{n}\n".encode()})])
        repo = f"bench/small/app-{n:03d}"
        push_image(base, repo, "v1", image)
        small.append(_ref(repo, "v1", image, image))
    return Corpus(big, huge, _ref("bench/multi", "v1", index, images[0]), tuple(small))
