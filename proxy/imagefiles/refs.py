"""Image references as the files write them.

``normalize`` applies the rules docker, containerd and Kubernetes apply to a name in
a file, so the proxy asks for what they would pull: a first component with a dot, a
port or ``localhost`` is a registry host; otherwise the image is Docker Hub's
(``redis`` is ``docker.io/library/redis``); no tag is ``latest``; a digest wins over
a tag. A reference to the proxy itself (``localhost:5000/proj/repo/app``) is the
proxy's own name for the image, and one through a mirror's own socket the mirrored
registry's::

    >>> normalize("redis:7").name, normalize("redis:7").reference
    ('docker.io/library/redis', '7')
    >>> normalize("ghcr.io/org/tool@sha256:" + "a" * 64).reference[:9]
    'sha256:aa'
    >>> normalize("127.0.0.1:5000/proj/repo/app:1.0", own={"127.0.0.1:5000": ""}).name
    'proj/repo/app'
    >>> normalize("localhost:5001/alpine", own={"localhost:5001": "docker.io"}).name
    'docker.io/library/alpine'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HOST = re.compile(r"[a-zA-Z0-9.-]+(:[0-9]+)?|\[[0-9a-fA-F:]+\](:[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


class Unresolved(ValueError):
    """A reference that cannot be known from the file; the message says why."""


@dataclass(frozen=True)
class Wanted:
    """A normalized reference: ``name`` as a client names it to the proxy (a registry
    host first, unless it is the proxy's own name) and a tag or digest."""

    name: str
    reference: str


def _is_host(part: str) -> bool:
    return bool(_HOST.fullmatch(part)) and ("." in part or ":" in part or part == "localhost")


def normalize(text: str, *, own: Mapping[str, str] | None = None) -> Wanted:
    """``text`` as docker would pull it; ``own``: the proxy's own ``host:port``s, each
    with the registry its socket serves ("" for the proxy's own names)."""
    own = own or {}
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise Unresolved(f"{text!r} is not an image reference")
    name, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise Unresolved(f"{text!r}: {digest!r} is not a digest")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = "latest"
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise Unresolved(f"{text!r}: {tag!r} is not a tag")
    first, sep, rest = name.partition("/")
    if sep and _is_host(first):
        if first.lower() in own:  # the proxy itself, or a mirror's own socket
            first = own[first.lower()]
            name = f"{first}/{rest}" if first else rest
        if first.lower() in ("index.docker.io", "registry-1.docker.io", DOCKER_HUB):
            name = f"{DOCKER_HUB}/{rest if '/' in rest else 'library/' + rest}"
    else:
        name = f"{DOCKER_HUB}/{name if sep else 'library/' + name}"
    if name != name.lower():
        raise Unresolved(f"{text!r}: repository names are lowercase")
    first, _, path = name.partition("/")
    parts = path.split("/") if _is_host(first) else name.split("/")
    if not all(_COMPONENT.fullmatch(part) for part in parts):
        raise Unresolved(f"{text!r} is not a valid repository name")
    return Wanted(name, digest if at else tag)
