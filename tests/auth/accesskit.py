"""A proxy with client auth, rules and mirrors in front of a seeded fake GAR, and raw
HTTP requests to it (``http.client`` sends a path exactly as written: no dot-segment
removal, no re-encoding, repeated parameters kept), for the access-control tables.

Repositories upstream (all in ``us``)::

    alpha/team/app:v1      alpha/team/other:v1     alpha/secret/app:v1
    gamma/hub/library/alpine:3   (docker.io mirror, with its own listener)
    gamma/ghcr/org/tool:1        (ghcr.io mirror)

Identities (htpasswd, bcrypt cost 4; password = name + "-pw")::

    alice    pull, push alpha/team
    builder  pull alpha/team, gamma/hub; push alpha/team
    hubber   pull gamma/hub
    lead     pull alpha/team; admin
    ops      pull gamma/hub; admin
    root     pull, push everything; admin
    mallory  in htpasswd, no entry: the "*" entry, which grants nothing
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy

RULES = """
[identities.alice]
pull = ["alpha/team"]
push = ["alpha/team"]

[identities.builder]
pull = ["alpha/team", "gamma/hub"]
push = ["alpha/team"]

[identities.hubber]
pull = ["gamma/hub"]

[identities.lead]
pull = ["alpha/team"]
admin = true

[identities.ops]
pull = ["gamma/hub"]
admin = true

[identities.root]
pull = ["*"]
push = ["*"]
admin = true

[identities."*"]
pull = []
"""
USERS = ("alice", "builder", "hubber", "lead", "ops", "root", "mallory")
MIRRORS: list[dict[str, Any]] = [
    {"host": "docker.io", "repository": "gamma/hub", "location": "us", "listen": "127.0.0.1:0"},
    {"host": "ghcr.io", "repository": "gamma/ghcr", "location": "us"},
]
IMAGES = {
    ("alpha/team/app", "v1"): "team-app",
    ("alpha/team/other", "v1"): "team-other",
    ("alpha/secret/app", "v1"): "secret-app",
    ("gamma/hub/library/alpine", "3"): "alpine",
    ("gamma/ghcr/org/tool", "1"): "tool",
}
ACCEPT = ", ".join(mt.DEFAULT_ACCEPT)


def basic(user: str, password: str | None = None) -> dict[str, str]:
    secret = password if password is not None else f"{user}-pw"
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def write_access_files(directory: Path, rules: str = RULES) -> dict[str, str]:
    """The htpasswd, tokens and rules files; settings keys for them."""
    lines = [
        f"{user}:{bcrypt.hashpw(f'{user}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user in USERS
    ]
    (directory / "htpasswd").write_text("\n".join(lines) + "\n")
    (directory / "tokens").write_text("ci:ci-token-0123456789\n")
    (directory / "rules.toml").write_text(rules)
    return {
        "access__htpasswd_file": str(directory / "htpasswd"),
        "access__tokens_file": str(directory / "tokens"),
        "access__rules_file": str(directory / "rules.toml"),
    }


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str | None:
        """The first OCI error code of the body, if it has one."""
        try:
            return str(json.loads(self.body)["errors"][0]["code"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None


def call(
    base: str,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """``method target`` sent as written, on a fresh connection."""
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        sent = {"Accept": ACCEPT, **(headers or {})}
        connection.request(method, target, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


@dataclass
class Setup:
    fake: FakeGAR
    proxy: RunningProxy
    images: dict[str, Image] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def hub_socket(self) -> str:
        return self.proxy.mirror_url("docker.io")

    def layer(self, repo: str) -> str:
        """The digest of the first layer of the image seeded in ``repo``."""
        return self.images[repo].layers[0].digest


@contextlib.contextmanager
def seeded_proxy(directory: Path, **settings: Any) -> Iterator[Setup]:
    """The fake GAR seeded with ``IMAGES`` and the proxy in front of it, every image
    pulled once by root (so the cache holds every blob and the catalog every name)."""
    fake = FakeGAR(auth="none")
    with fake.serve():
        setup = Setup(fake, None)  # type: ignore[arg-type]
        for (repo, tag), seed in IMAGES.items():
            image = build_image([make_layer({seed: seed.encode()})])
            setup.images[repo] = image
            fake.put_image("us", repo, tag, image)
        keys = {**write_access_files(directory), "routing__mirrors": MIRRORS, **settings}
        with run_proxy(proxy_settings(directory, fake.upstream, **keys)) as running:
            setup.proxy = running
            for (repo, tag), _ in IMAGES.items():
                got = call(running.url, "GET", f"/v2/{repo}/manifests/{tag}", basic("root"))
                assert got.status == 200, (repo, got.status, got.body[:300])
                for blob in setup.images[repo].blobs:
                    pulled = call(running.url, "GET", f"/v2/{repo}/blobs/{blob.digest}",
                                  basic("root"))  # fmt: skip
                    assert pulled.status == 200 and pulled.body == blob.data
            yield setup
