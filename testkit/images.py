"""Small, deterministic container images built in memory for tests (never downloaded).

Same input, same bytes, same digests::

    image = build_image([make_layer({"etc/motd": b"hi\\n"}), make_layer(size=64 << 20, seed=1)])
    index = build_index([image, build_image([make_layer()], architecture="arm64")])
    sbom = build_artifact(image, "application/spdx+json", b"{}")   # subject -> image
    push_image("http://127.0.0.1:5000", "proj/repo/app", "1.0", index)
    write_oci_layout(tmp_path / "layout", image, "1.0")    # skopeo copy oci:DIR:1.0 ...

Layers are gzip'd tars with fixed owners and times; ``size=`` adds a file of
incompressible pseudo-random bytes (stored gzip blocks, so building 200 MiB takes about
a second). Configs carry ``rootfs.diff_ids`` and ``history`` so docker, podman and
skopeo accept the images.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from proxy.oci import mediatypes as mt

Format = Literal["oci", "docker"]

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
REF_NAME = "org.opencontainers.image.ref.name"

_MTIME = 1_700_000_000  # fixed so a layer's bytes depend only on its content
_CREATED = "2023-11-14T22:13:20Z"
_RANDOM_PIECE = 8 << 20
# diff_id (sha256 of the uncompressed tar) of each layer made here, by layer digest,
# so build_image need not decompress hundreds of MiB again.
_DIFF_IDS: dict[str, str] = {}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    """Bytes with their digest and media type; ``descriptor()`` for manifests."""

    data: bytes = field(repr=False)
    digest: str
    media_type: str
    size: int

    @classmethod
    def of(cls, data: bytes, media_type: str) -> Blob:
        return cls(data, sha256(data), media_type, len(data))

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """An image (or artifact) manifest with its config and layers."""

    config: Blob
    layers: tuple[Blob, ...]
    manifest: bytes = field(repr=False)
    digest: str
    media_type: str
    platform: dict[str, str] | None = None

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.manifest)}

    def manifest_json(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest))


@dataclass(frozen=True)
class Index:
    """An OCI image index or Docker manifest list over ``images``."""

    images: tuple[Image, ...]
    manifest: bytes = field(repr=False)
    digest: str
    media_type: str

    @property
    def blobs(self) -> tuple[Blob, ...]:
        seen: dict[str, Blob] = {}
        for image in self.images:
            for blob in image.blobs:
                seen.setdefault(blob.digest, blob)
        return tuple(seen.values())

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.manifest)}

    def manifest_json(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest))


# ---------------------------------------------------------------- layers


def _tar_header(name: str, size: int, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _random_pieces(size: int, seed: int) -> Iterator[bytes]:
    # Pieces are windows of a random pool at random offsets: as incompressible as fresh
    # random bytes (repeats lie megabytes apart, far outside any deflate window) at
    # memcpy speed rather than the generator's.
    rng = random.Random(seed)
    pool = rng.randbytes(min(size, _RANDOM_PIECE) * 2)
    left = size
    while left > 0:
        piece = min(left, _RANDOM_PIECE)
        offset = rng.randrange(len(pool) - piece + 1)
        yield pool[offset : offset + piece]
        left -= piece


def _tar_stream(files: Mapping[str, bytes], size: int | None, seed: int) -> Iterator[bytes]:
    normalized = {name.strip("/"): data for name, data in files.items()}
    names = sorted(normalized)
    parents = sorted({str(p) for name in names for p in Path(name).parents if str(p) != "."})
    for directory in parents:
        yield _tar_header(directory + "/", 0, directory=True)
    for name in names:
        data = normalized[name]
        yield _tar_header(name, len(data))
        yield data
        yield bytes(-len(data) % 512)
    if size is not None:
        yield _tar_header(f"random-{seed}.bin", size)
        yield from _random_pieces(size, seed)
        yield bytes(-size % 512)
    yield bytes(1024)


def make_layer(
    files: dict[str, bytes] | None = None, *, size: int | None = None, seed: int = 0
) -> bytes:
    """A gzip'd tar layer holding ``files`` and, with ``size``, ~size random bytes.

    With neither, a single small file whose content depends on ``seed``.
    """
    if files is None:
        files = {} if size is not None else {f"layer-{seed}.txt": f"layer {seed}\n".encode()}
    # Random data does not compress: stored blocks (level 0) keep big layers fast.
    compressor = zlib.compressobj(0 if size else 6, zlib.DEFLATED, 31)
    uncompressed = hashlib.sha256()
    out = io.BytesIO()
    for piece in _tar_stream(files, size, seed):
        uncompressed.update(piece)
        out.write(compressor.compress(piece))
    out.write(compressor.flush())
    layer = out.getvalue()
    _DIFF_IDS[sha256(layer)] = "sha256:" + uncompressed.hexdigest()
    return layer


def _is_gzip(layer: bytes) -> bool:
    return layer[:2] == b"\x1f\x8b"


def diff_id(layer: bytes, digest: str | None = None) -> str:
    """The sha256 of the uncompressed tar, as listed in ``rootfs.diff_ids``."""
    digest = digest or sha256(layer)
    known = _DIFF_IDS.get(digest)
    if known:
        return known
    if not _is_gzip(layer):
        return digest
    hasher = hashlib.sha256()
    inflater = zlib.decompressobj(31)
    view = memoryview(layer)
    for offset in range(0, len(view), 1 << 20):
        hasher.update(inflater.decompress(view[offset : offset + (1 << 20)]))
    hasher.update(inflater.flush())
    _DIFF_IDS[digest] = "sha256:" + hasher.hexdigest()
    return _DIFF_IDS[digest]


# ---------------------------------------------------------------- manifests


def _platform(os: str, architecture: str, variant: str | None) -> dict[str, str]:
    platform = {"architecture": architecture, "os": os}
    if variant:
        platform["variant"] = variant
    return platform


def _config(layers: Sequence[Blob], platform: dict[str, str]) -> bytes:
    return _json(
        {
            **platform,
            "created": _CREATED,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id(b.data, b.digest) for b in layers]},
            "history": [
                {"created": _CREATED, "created_by": f"tests.images layer {n}"}
                for n in range(len(layers))
            ],
        }
    )


def build_image(
    layers: list[bytes],
    *,
    fmt: Format = "oci",
    os: str = "linux",
    architecture: str = "amd64",
    variant: str | None = None,
    subject: Image | Index | None = None,
    annotations: dict[str, str] | None = None,
) -> Image:
    """An image manifest over ``layers`` (gzip'd or plain tars) with a valid config."""
    if fmt == "docker" and (subject is not None or annotations):
        raise ValueError("docker v2 manifests carry neither subject nor annotations")
    docker = fmt == "docker"
    layer_blobs = tuple(
        Blob.of(
            layer,
            (DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP)
            if _is_gzip(layer)
            else (DOCKER_LAYER_TAR if docker else OCI_LAYER_TAR),
        )
        for layer in layers
    )
    platform = _platform(os, architecture, variant)
    config = Blob.of(_config(layer_blobs, platform), mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG)
    media_type = mt.DOCKER_MANIFEST_V2 if docker else mt.OCI_MANIFEST
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [b.descriptor() for b in layer_blobs],
    }
    if subject is not None:
        body["subject"] = subject.descriptor()
    if annotations:
        body["annotations"] = dict(annotations)
    manifest = _json(body)
    return Image(config, layer_blobs, manifest, sha256(manifest), media_type, platform)


def build_artifact(
    subject: Image | Index,
    artifact_type: str,
    payload: bytes = b"{}",
    *,
    payload_media_type: str = "application/octet-stream",
    annotations: dict[str, str] | None = None,
) -> Image:
    """An OCI 1.1 artifact (empty config, one payload layer) referring to ``subject``."""
    empty = Blob.of(b"{}", mt.OCI_EMPTY)
    layer = Blob.of(payload, payload_media_type)
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [layer.descriptor()],
        "subject": subject.descriptor(),
    }
    if annotations:
        body["annotations"] = dict(annotations)
    manifest = _json(body)
    return Image(empty, (layer,), manifest, sha256(manifest), mt.OCI_MANIFEST, None)


def build_index(
    images: list[Image], fmt: Format = "oci", *, annotations: dict[str, str] | None = None
) -> Index:
    """An OCI index (or Docker manifest list) with a platform on each image's descriptor."""
    media_type = mt.DOCKER_MANIFEST_LIST if fmt == "docker" else mt.OCI_INDEX
    descriptors = []
    for image in images:
        descriptor = image.descriptor()
        if image.platform is not None:
            descriptor["platform"] = dict(image.platform)
        descriptors.append(descriptor)
    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": descriptors}
    if annotations:
        if fmt == "docker":
            raise ValueError("docker manifest lists carry no annotations")
        body["annotations"] = dict(annotations)
    manifest = _json(body)
    return Index(tuple(images), manifest, sha256(manifest), media_type)


# ---------------------------------------------------------------- OCI layout


def _write_blob(blobs_dir: Path, digest: str, data: bytes) -> None:
    path = blobs_dir / digest.split(":", 1)[1]
    if not path.exists():
        path.write_bytes(data)


def write_oci_layout(directory: str | Path, image: Image | Index, tag: str) -> Path:
    """Write (or add to) an OCI image layout so ``skopeo copy oci:DIR:TAG`` finds ``image``."""
    root = Path(directory)
    blobs_dir = root / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    for blob in image.blobs:
        _write_blob(blobs_dir, blob.digest, blob.data)
    for child in image.images if isinstance(image, Index) else ():
        _write_blob(blobs_dir, child.digest, child.manifest)
    _write_blob(blobs_dir, image.digest, image.manifest)
    index_path = root / "index.json"
    manifests: list[dict[str, Any]] = []
    if index_path.exists():
        manifests = [
            m
            for m in json.loads(index_path.read_bytes()).get("manifests", [])
            if m.get("annotations", {}).get(REF_NAME) != tag
        ]
    manifests.append({**image.descriptor(), "annotations": {REF_NAME: tag}})
    index_path.write_bytes(
        _json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests})
    )
    return root


# ---------------------------------------------------------------- pushing


class PushError(RuntimeError):
    def __init__(self, action: str, response: httpx.Response) -> None:
        super().__init__(
            f"{action}: {response.request.method} {response.request.url} -> "
            f"{response.status_code} {response.text[:500]}"
        )
        self.response = response


def _expect(response: httpx.Response, status: int, action: str) -> httpx.Response:
    if response.status_code != status:
        raise PushError(action, response)
    return response


def _push_blob(client: httpx.Client, base: str, repo: str, blob: Blob) -> None:
    if client.head(f"{base}/v2/{repo}/blobs/{blob.digest}").status_code == 200:
        return
    started = _expect(client.post(f"{base}/v2/{repo}/blobs/uploads/"), 202, "start upload")
    location = started.url.join(started.headers["location"])
    _expect(
        client.put(
            location.copy_merge_params({"digest": blob.digest}),
            content=blob.data,
            headers={"content-type": mt.OCTET_STREAM},
        ),
        201,
        f"upload {blob.digest}",
    )


def _push_manifest(
    client: httpx.Client, base: str, repo: str, reference: str, item: Image | Index
) -> None:
    _expect(
        client.put(
            f"{base}/v2/{repo}/manifests/{reference}",
            content=item.manifest,
            headers={"content-type": item.media_type},
        ),
        201,
        f"put manifest {reference}",
    )


def push_image(
    base_url: str,
    repo: str,
    tag: str | None,
    image: Image | Index,
    *,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Push ``image`` (an index: its images first, by digest) to any OCI registry.

    ``base_url`` is everything before ``/v2/`` (for the fake GAR, ``URL/LOCATION``).
    Blobs the registry already has are skipped. Returns the manifest digest.
    """
    base = base_url.rstrip("/")
    with httpx.Client(headers=dict(headers or {}), timeout=120) as client:
        for blob in image.blobs:
            _push_blob(client, base, repo, blob)
        if isinstance(image, Index):
            for child in image.images:
                _push_manifest(client, base, repo, child.digest, child)
        _push_manifest(client, base, repo, tag or image.digest, image)
    return image.digest
