"""The proxy with real google-auth against the fake OAuth endpoint and a fake GAR.

A service-account key file (``gcp.credentials_file``, as GOOGLE_APPLICATION_CREDENTIALS
would name it) carries a ``token_uri`` on loopback, so google-auth signs a JWT and trades
it for an access token for real; the fake GAR accepts exactly the tokens the fake OAuth
endpoint issued and has not had revoked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.fakes.google import FakeOAuth
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}


class IssuedTokens(set[str]):
    """``FakeGAR.access_tokens`` backed by the fake OAuth: what it issued, minus revocations."""

    def __init__(self, oauth: FakeOAuth) -> None:
        super().__init__()
        self.oauth = oauth
        self.revoked: set[str] = set()

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.oauth.is_valid(token) and token not in self.revoked

    def discard(self, token: object) -> None:
        if isinstance(token, str):
            self.revoked.add(token)

    def add(self, token: str) -> None:
        self.revoked.discard(token)


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    issuer = FakeOAuth()
    with issuer.serving():
        yield issuer


@pytest.fixture
def key_file(oauth: FakeOAuth, tmp_path: Path) -> Path:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(oauth.service_account().info))
    return path


def gar(oauth: FakeOAuth, **options: Any) -> FakeGAR:
    fake = FakeGAR(auth="gcp", **options)
    fake.access_tokens = IssuedTokens(oauth)
    return fake


def start(tmp_path: Path, url: str, key_file: Path) -> Any:
    settings = proxy_settings(
        tmp_path, url + "/{location}", auth="gcp", gcp__credentials_file=str(key_file)
    )
    return run_proxy(settings)


async def pull(proxy: RunningProxy, repo: str, tag: str, image: Image) -> None:
    """One client pulling one image: the manifest by tag, then its blobs in parallel."""
    # A client each, like separate docker daemons (and httpx's pool is slow past ~20).
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30, verify=False) as http:
        got = await http.get(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT)
        assert got.status_code == 200, got.text
        assert got.content == image.manifest
        blobs = await asyncio.gather(
            *(http.get(f"/v2/{repo}/blobs/{b.digest}") for b in image.blobs)
        )
    for blob, answer in zip(image.blobs, blobs, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.content == blob.data


def issued_token(oauth: FakeOAuth) -> str:
    """The one live token google-auth holds (the last one the fake issued)."""
    return list(oauth.issued)[-1]


async def test_pull_with_a_service_account_key(
    oauth: FakeOAuth, key_file: Path, tmp_path: Path
) -> None:
    fake = gar(oauth)
    image = build_image([make_layer({"g": b"1"}), make_layer(size=300_000, seed=30)])
    fake.put_image("us", "proj/repo/app", "1.0", image)
    with fake.serve() as url, start(tmp_path, url, key_file) as proxy:
        await pull(proxy, "proj/repo/app", "1.0", image)
    assert oauth.token_requests == 1
    assert oauth.issued[issued_token(oauth)].scopes == (
        "https://www.googleapis.com/auth/cloud-platform",
    )
    assert fake.count(kind="token") == 0  # GAR took the access token as it was
    assert fake.count("GET", "blob") == len(image.blobs)


async def test_registry_token_dance_once_per_scope(
    oauth: FakeOAuth, key_file: Path, tmp_path: Path
) -> None:
    fake = gar(oauth, registry_token_only=True)
    images = {
        f"proj/repo/{name}": build_image([make_layer({name: name.encode()})])
        for name in ("one", "two")
    }
    for repo, image in images.items():
        for tag in ("1", "2", "3", "4", "5"):
            fake.put_image("us", repo, tag, image)
    with fake.serve() as url, start(tmp_path, url, key_file) as proxy:
        for repo, image in images.items():
            # Cold and concurrent: five tags of one repository at once, then the blobs.
            await asyncio.gather(
                *(pull(proxy, repo, tag, image) for tag in ("1", "2", "3", "4", "5"))
            )
        fake.reset_counts()
        for repo, image in images.items():
            await pull(proxy, repo, "1", image)
    assert fake.count(kind="token") == 0  # the second round reused the tokens
    bought = sorted(name for t in fake.issued_tokens.values() for name in t.scopes)
    assert bought == sorted(images)  # one registry token per scope, however many asked
    # The first 401 costs one Google refresh before the proxy learns of the realm.
    assert oauth.token_requests <= 2


async def test_revoked_access_token_is_refreshed_once(
    oauth: FakeOAuth, key_file: Path, tmp_path: Path
) -> None:
    fake = gar(oauth)
    first = build_image([make_layer({"r": b"1"})])
    second = build_image([make_layer({"r": b"2"})])
    fake.put_image("us", "proj/repo/app", "1", first)
    fake.put_image("us", "proj/repo/app", "2", second)
    with fake.serve() as url, start(tmp_path, url, key_file) as proxy:
        await pull(proxy, "proj/repo/app", "1", first)
        assert oauth.token_requests == 1
        fake.revoke_access_token(issued_token(oauth))
        await pull(proxy, "proj/repo/app", "2", second)
    assert oauth.token_requests == 2


async def test_fifty_concurrent_pulls_with_a_revoked_token_cause_one_refresh(
    oauth: FakeOAuth, key_file: Path, tmp_path: Path
) -> None:
    fake = gar(oauth)
    warm = build_image([make_layer({"w": b"0"})])
    fake.put_image("us", "proj/repo/app", "warm", warm)
    images = [build_image([make_layer({"n": str(n).encode()})]) for n in range(50)]
    for n, image in enumerate(images):
        fake.put_image("us", "proj/repo/app", f"t{n}", image)
    with fake.serve() as url, start(tmp_path, url, key_file) as proxy:
        await pull(proxy, "proj/repo/app", "warm", warm)
        fake.revoke_access_token(issued_token(oauth))
        fake.reset_counts()
        await asyncio.gather(
            *(pull(proxy, "proj/repo/app", f"t{n}", image) for n, image in enumerate(images))
        )
    assert oauth.token_requests == 2
    assert fake.count("GET", "manifest") >= 50
