"""Tiers: lower gar-proxies (a node's, a sidecar's) whose upstream is an upper one (a
team's) whose upstream is GAR. The lower tier authenticates to the upper (basic with a
password file, bearer with a token file); the upper tier logs which tier asked; names
pass through whole; tag TTLs compose (docs/DESIGN.md "Tiers")."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme

from proxy.clock import ManualClock
from proxy.config import ConfigError
from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.conftest import FakeGarFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
MIRRORS = [{"host": "docker.io", "repository": "proj/hub", "location": "us"}]


def _image(seed: int) -> Image:
    return build_image([make_layer(seed=seed), make_layer(seed=seed + 100)])


def pull(base: str, name: str, tag: str, image: Image, **params: str) -> None:
    got = httpx.get(f"{base}/v2/{name}/manifests/{tag}", params=params, headers=ACCEPT)
    assert got.status_code == 200, got.text
    assert got.headers["docker-content-digest"] == image.digest
    for blob in image.blobs:
        body = httpx.get(f"{base}/v2/{name}/blobs/{blob.digest}", params=params)
        assert body.status_code == 200 and body.content == blob.data


class Tiers:
    """An upper tier over ``fake`` that knows node-a (token) and node-b (password)."""

    def __init__(self, stack: contextlib.ExitStack, root: Path, fake: FakeGAR) -> None:
        self.stack, self.root = stack, root
        hashed = bcrypt.hashpw(b"node-b-pw", bcrypt.gensalt(rounds=4)).decode()
        (root / "htpasswd").write_text(f"node-b:{hashed}\n")
        (root / "tokens").write_text("node-a:node-a-token\n")
        # The upper tier listens with TLS; the lower tiers trust its CA (upstream.ca_file).
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(root / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
        ca.cert_pem.write_to_path(str(root / "ca.pem"))
        self.upper_clock = ManualClock()
        self.upper = self.start(
            "upper",
            fake.upstream,
            self.upper_clock,
            tls__cert_file=str(root / "cert.pem"),
            tls__key_file=str(root / "key.pem"),
            access__htpasswd_file=str(root / "htpasswd"),
            access__tokens_file=str(root / "tokens"),
            routing__mirrors=MIRRORS,
            cache__tag_ttl="600",
        )

    def start(self, name: str, upstream: str, clock: Any = None, **keys: Any) -> RunningProxy:
        settings = proxy_settings(self.root / name, upstream, **keys)
        running = run_proxy(settings, clock=clock) if clock else run_proxy(settings)
        return self.stack.enter_context(running)

    def lower(self, name: str, secret: str, *, clock: Any = None, **keys: Any) -> RunningProxy:
        """A lower tier: bearer with a token file, or (node-b) basic with a password file."""
        (self.root / f"{name}.secret").write_text(secret + "\n")
        if name == "node-b":
            auth = {"upstream__auth": "basic", "upstream__username": "node-b"}
            auth["upstream__password_file"] = str(self.root / f"{name}.secret")
        else:
            auth = {"upstream__auth": "bearer"}
            auth["upstream__token_file"] = str(self.root / f"{name}.secret")
        assert self.upper.url.startswith("https://")
        tier = {"upstream__tier": "true", "upstream__ca_file": str(self.root / "ca.pem")}
        return self.start(name, self.upper.url, clock, **tier, **auth, **keys)


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


@pytest.fixture
def tiers(fake: FakeGAR, tmp_path: Path) -> Iterator[Tiers]:
    with contextlib.ExitStack() as stack:
        yield Tiers(stack, tmp_path, fake)


def _identities(caplog: pytest.LogCaptureFixture) -> set[str]:
    records = [r for r in caplog.records if r.name == "gar_proxy.access"]
    return {getattr(r, "identity", None) or "" for r in records} - {"", "anonymous"}


def test_a_second_lower_tier_pulls_from_the_upper_tier_alone(
    tiers: Tiers, fake: FakeGAR, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gar_proxy.access")
    image = _image(1)
    fake.put_image("us", "proj/repo/app", "1", image)
    node_a = tiers.lower("node-a", "node-a-token").url
    ready = httpx.get(f"{node_a}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["credentials"]["source"] == "bearer"
    pull(node_a, "proj/repo/app", "1", image)
    assert fake.count("GET", "blob") == len(image.blobs)
    fake.reset_counts()
    pull(tiers.lower("node-b", "node-b-pw").url, "proj/repo/app", "1", image)
    assert fake.count() == 0  # the upper tier had it all
    # The upper tier's request log names each lower tier (the lowers have no client auth).
    assert _identities(caplog) == {"node-a", "node-b"}


def test_ns_and_host_qualified_names_pass_through_the_lower_tier(
    tiers: Tiers, fake: FakeGAR
) -> None:
    hub, eu = _image(2), _image(3)
    fake.put_image("us", "proj/hub/library/alpine", "3", hub)
    fake.put_image("europe-west1", "proj/repo/eu", "1", eu)
    lower = tiers.lower("node-a", "node-a-token").url
    pull(lower, "library/alpine", "3", hub, ns="docker.io")  # containerd
    pull(lower, "europe-west1-docker.pkg.dev/proj/repo/eu", "1", eu)
    pull(lower, "proj/repo/eu", "1", eu, ns="europe-west1-docker.pkg.dev")
    assert fake.count(location="europe-west1", kind="manifest") == 1  # cached per name once


def test_wrong_credentials_say_so_to_the_lower_tiers_client(tiers: Tiers, fake: FakeGAR) -> None:
    fake.put_image("us", "proj/repo/app", "1", _image(4))
    lower = tiers.lower("node-a", "stale-token").url
    got = httpx.get(f"{lower}/v2/proj/repo/app/manifests/1", headers=ACCEPT)
    assert got.status_code == 403
    error = got.json()["errors"][0]
    assert error["code"] == "DENIED"
    assert "upstream rejected gar-proxy's credentials" in error["message"]
    assert f"upstream.token_file {tiers.root / 'node-a.secret'}" in error["message"]
    assert "stale-token" not in got.text
    assert fake.count() == 0  # refused at the upper tier
    # The secret is rotated in place (a Kubernetes secret update): no restart needed.
    (tiers.root / "node-a.secret").write_text("node-a-token\n")
    assert httpx.get(f"{lower}/v2/proj/repo/app/manifests/1", headers=ACCEPT).status_code == 200


def test_bearer_without_a_token_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"upstream\.token_file"):
        proxy_settings(tmp_path, "http://127.0.0.1:1", auth="bearer")


def test_tag_ttls_compose(tiers: Tiers, fake: FakeGAR, caplog: pytest.LogCaptureFixture) -> None:
    """A lower tier with tag_ttl T asks the upper at most every T; the upper answers
    from memory within its own TTL (600 s here) and asks GAR only after that."""
    caplog.set_level(logging.INFO, logger="gar_proxy.access")
    image = _image(5)
    fake.put_image("us", "proj/repo/app", "1", image)
    clock = ManualClock()
    lower = tiers.lower("node-a", "node-a-token", clock=clock, cache__tag_ttl="60").url

    def asked_upper(method: str | None = None) -> int:
        return sum(
            1
            for r in caplog.records
            if getattr(r, "identity", None) == "node-a"
            and getattr(r, "route", "") == "manifest"
            and method in (None, getattr(r, "method", ""))
        )

    pull(lower, "proj/repo/app", "1", image)
    first = asked_upper()
    clock.advance(59)
    pull(lower, "proj/repo/app", "1", image)
    assert asked_upper() == first  # within the lower TTL: from the lower tier's memory
    clock.advance(2)
    pull(lower, "proj/repo/app", "1", image)
    assert asked_upper() == first + 1  # one revalidation against the upper tier,
    assert asked_upper("HEAD") == 1  # a HEAD,
    assert fake.count(kind="manifest") == 1  # which the upper answered from memory
    tiers.upper_clock.advance(601)  # past the upper TTL: the next revalidation reaches GAR
    clock.advance(61)
    pull(lower, "proj/repo/app", "1", image)
    assert asked_upper("HEAD") == 2
    assert fake.count(kind="manifest") == 2
