"""Platforms (``os/arch[/variant]``) and the seed's matching rules.

>>> Platform.parse("linux/x86_64").matches(Platform.parse("linux/amd64"))
True
>>> Platform.parse("linux/arm/v7").matches(Platform.parse("linux/armhf"))  # variant unasked
True
"""

from __future__ import annotations

import platform as _machine
from dataclasses import dataclass
from typing import Any

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armhf": "arm",
    "arm": "arm",
}


def normalize_arch(arch: str) -> str:
    lowered = arch.lower()
    return _ARCH_ALIASES.get(lowered, lowered)


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls, machine: str | None = None) -> Platform:
        """This machine's platform, as ``docker pull`` picks from an index (Linux)."""
        raw = (machine or _machine.machine()).lower()
        arch = normalize_arch(raw)
        variant = "v7" if raw.startswith("armv7") else "v6" if raw.startswith("armv6") else None
        return cls("linux", arch, variant)

    @classmethod
    def from_descriptor(cls, platform: dict[str, Any]) -> Platform:
        return cls(
            str(platform.get("os", "")),
            str(platform.get("architecture", "")),
            platform.get("variant"),
            platform.get("os.version"),
        )

    def matches(self, wanted: Platform) -> bool:
        """Does this (available) platform satisfy ``wanted``? A variant only counts if asked."""
        if normalize_arch(self.architecture) != normalize_arch(wanted.architecture):
            return False
        if self.os.lower() != wanted.os.lower():
            return False
        return wanted.variant is None or self.variant == wanted.variant

    def __str__(self) -> str:
        tail = f"/{self.variant}" if self.variant else ""
        return f"{self.os}/{self.architecture}{tail}"
