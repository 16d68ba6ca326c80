"""``gar-proxy doctor``: do this machine's container runtimes pull through this proxy?

Each runtime module reads the runtime's own configuration where the runtime reads it
(dockerd's ``daemon.json`` and the running daemon's view of it, containerd's
``config.toml`` for its version, its ``hosts.toml`` files, podman's ``registries.conf``,
the kubelet's image service endpoint) and returns a ``Finding``: whether it is there,
whether its pulls of the registries this proxy serves reach the proxy, and, if not,
what to change. ``--pull`` then pulls through each runtime that should reach the proxy
and reads the proxy's request counter to confirm it did.

Pure inspection: nothing here changes a runtime's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class Target:
    """Where pulls should go: the proxy's address (``host:port``), each mirror's own
    listen address (``docker.io`` -> ``host:port``), and the registry hosts it serves
    (GAR locations, mirrored registries)."""

    address: str
    mirror_listens: dict[str, str]
    hosts: tuple[str, ...]

    def addresses(self) -> set[str]:
        return {self.address, *self.mirror_listens.values()}

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def address(host: str, port: int) -> str:
    """``host:port`` a client on this machine uses for a bind address.

    >>> address("0.0.0.0", 5000), address("::", 5000), address("10.1.2.3", 80)
    ('127.0.0.1:5000', '[::1]:5000', '10.1.2.3:80')
    """
    host = WILDCARDS.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def image_host(image: str) -> str:
    """The registry host of an image name, Docker's rule (a first part with a dot or a
    port is a host; otherwise Docker Hub).

    >>> image_host("alpine:3"), image_host("us-docker.pkg.dev/p/r/i:1"), image_host("a/b")
    ('docker.io', 'us-docker.pkg.dev', 'docker.io')
    """
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


@dataclass
class Finding:
    """One runtime: ``present`` (found on this machine), ``ok`` (its pulls of the
    proxy's registries reach the proxy), what was read, and what to change."""

    runtime: str
    present: bool
    ok: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    routed: list[str] = field(default_factory=list)  # registry hosts whose pulls reach it
    pull: str | None = None  # the --pull outcome, when asked

    def as_json(self) -> dict[str, object]:
        return {"runtime": self.runtime, "present": self.present, "ok": self.ok,
                "source": self.source, "notes": self.notes, "fixes": self.fixes,
                "routed": self.routed, "pull": self.pull}  # fmt: skip

    def lines(self) -> list[str]:
        if not self.present:
            return [f"{self.runtime}: not found ({self.source})"]
        state = "pulls go through the proxy" if self.ok else "NOT through the proxy"
        out = [f"{self.runtime} ({self.source}): {state}"]
        out += [f"  - {note}" for note in self.notes]
        out += [f"  fix: {fix}" for fix in self.fixes]
        if self.pull is not None:
            out.append(f"  pull: {self.pull}")
        return out
