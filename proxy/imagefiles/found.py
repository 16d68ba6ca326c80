"""What reading files finds: images (``Found``) and references that cannot be known
from the file (``Problem``, with the reason)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Found:
    """An image reference as the file writes it (variables substituted), where it was
    (``path:line`` or ``path: Kind/name containers[0]``), and the platform the file
    asks for (``FROM --platform=linux/arm64``, or the one warmed platform a Dockerfile
    names it for: ``base-${TARGETARCH}``; None: every warmed platform)."""

    text: str
    where: str
    platform: str | None = None
    line: int = 0


@dataclass(frozen=True)
class Problem:
    """A reference, or a file, that gives no image to warm, and why."""

    text: str
    where: str
    reason: str
