"""Parsing manifests just enough to know what they reference.

The proxy never rewrites a manifest: it keeps the exact bytes (their digest is the
identity) and reads only descriptors, to know which blobs and child manifests an
image needs and which platforms an index offers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.platform import Platform

# Manifests above this are refused by registries and by us on push (OCI spec: 4 MiB).
MANIFEST_READ_LIMIT = 4 * 1024 * 1024
# Manifests nest 4 deep; json.loads recurses per level (RecursionError past ~1,000).
MAX_NESTING = 64
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The blobs (config and layers) an image manifest needs."""
        return ((self.config,) if self.config else ()) + self.layers

    def platforms(self) -> list[Platform]:
        return [d.platform for d in self.manifests if d.platform is not None]


def _invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, message)


def _descriptor(raw: Any) -> Descriptor:
    if not isinstance(raw, dict):
        raise _invalid("descriptor is not an object")
    try:
        size = raw["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _invalid("descriptor size must be a non-negative integer")
        platform = raw.get("platform")
        return Descriptor(
            media_type=str(raw.get("mediaType", "")),
            digest=Digest.parse(str(raw["digest"])),
            size=size,
            platform=Platform.from_descriptor(platform) if isinstance(platform, dict) else None,
            artifact_type=raw.get("artifactType"),
        )
    except KeyError as missing:
        raise _invalid(f"descriptor lacks {missing.args[0]!r}") from None
    except RegistryError as error:
        if error.code is ErrorCode.DIGEST_INVALID:
            raise _invalid(f"descriptor digest: {error.message}") from None
        raise


def detect_media_type(body: dict[str, Any], content_type: str | None) -> str:
    declared = body.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if content_type and content_type.split(";")[0].strip() in mt.MANIFEST_TYPES:
        return content_type.split(";")[0].strip()
    if body.get("schemaVersion") == 1:
        return mt.DOCKER_MANIFEST_V1_SIGNED
    return mt.OCI_INDEX if "manifests" in body else mt.OCI_MANIFEST


def _check_nesting(text: str) -> None:
    """Refuse JSON nested deeper than ``MAX_NESTING``, before anything recursive sees it.

    Linear: strings are dropped and the brackets left are summed by C-level loops.
    """
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return  # the common case: too few brackets to nest that deep
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_NESTING:
        raise _invalid(f"manifest nests deeper than {MAX_NESTING} levels")


def parse_manifest(data: bytes, content_type: str | None = None) -> Manifest:
    """Parse manifest bytes; raises ``MANIFEST_INVALID`` for anything malformed."""
    try:
        # Decoded as json.loads decodes bytes (UTF-8, -16 or -32), to check it first.
        text = data.decode(json.detect_encoding(data), "surrogatepass")
        _check_nesting(text)
        body = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid(f"manifest is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise _invalid("manifest is not a JSON object")
    media_type = detect_media_type(body, content_type)
    if media_type in mt.SCHEMA1_TYPES:
        layers = tuple(
            Descriptor(mt.OCTET_STREAM, Digest.parse(str(layer.get("blobSum"))), -1)
            for layer in body.get("fsLayers", [])
            if isinstance(layer, dict)
        )
        return Manifest(media_type, None, layers, (), None)
    if media_type not in mt.MANIFEST_TYPES:
        raise _invalid(f"unsupported manifest media type {media_type!r}")
    if body.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    subject = _descriptor(body["subject"]) if "subject" in body else None
    if media_type in mt.INDEX_TYPES:
        children = body.get("manifests")
        if not isinstance(children, list):
            raise _invalid("index lacks a manifests list")
        return Manifest(media_type, None, (), tuple(map(_descriptor, children)), subject)
    layers = body.get("layers", [])
    if "config" not in body or not isinstance(layers, list):
        raise _invalid("image manifest needs config and layers")
    return Manifest(
        media_type, _descriptor(body["config"]), tuple(map(_descriptor, layers)), (), subject
    )
