"""Media types the proxy understands, and ``Accept`` negotiation helpers."""

from __future__ import annotations

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCTET_STREAM = "application/octet-stream"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST_V2, OCI_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES | SCHEMA1_TYPES

# What the proxy asks upstream for when it fetches on its own behalf (warm, revalidate).
DEFAULT_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2)


# More than any client names (docker sends 6); the rest of a longer list is ignored.
MAX_ACCEPT_TYPES = 64


def parse_accept(header_values: list[str]) -> tuple[str, ...]:
    """Media types named by the ``Accept`` headers, parameters dropped, order kept.

    Linear in the header's size and at most ``MAX_ACCEPT_TYPES`` long: a 300 KB header
    once cost 15 s of the event loop in a duplicate scan over a list.
    """
    types: dict[str, None] = {}  # an ordered set
    for value in header_values:
        for item in value.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type:
                types[media_type] = None
                if len(types) >= MAX_ACCEPT_TYPES:
                    return tuple(types)
    return tuple(types)


def accepts(accept: tuple[str, ...], media_type: str) -> bool:
    """Would a client with this ``Accept`` list take a manifest of ``media_type``?

    No ``Accept`` (or a wildcard) takes anything; schema1 is served only when asked for,
    and the distribution convention holds that a client naming no manifest type at all
    gets what the registry has.
    """
    if not accept or "*/*" in accept or media_type in accept:
        return True
    named_manifest_types = [t for t in accept if t in MANIFEST_TYPES]
    return not named_manifest_types and media_type not in SCHEMA1_TYPES
