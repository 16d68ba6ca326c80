"""The vulnerability gate on pulls through the proxy, against the fake GAR and a fake
Container Analysis: what blocks, what passes, what waits, and how often it asks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from proxy.clock import ManualClock
from proxy.config import load_settings
from proxy.gar.vulnerabilities import VulnerabilityClient
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from proxy.oci.names import Repository
from proxy.services.gate import VulnerabilityGate
from proxy.upstream.google_api import GoogleApi
from testkit.images import build_image, build_index, make_layer
from tests.conftest import ProxyFactory
from tests.gar.gatekit import Upstreams, upstreams

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
REPO = "proj/repo/app"


@pytest.fixture
def up() -> Iterator[Upstreams]:
    with upstreams() as served:
        yield served


def pull(url: str, reference: str, repo: str = REPO) -> httpx.Response:
    return httpx.get(f"{url}/v2/{repo}/manifests/{reference}", headers=ACCEPT, timeout=30)


def error_of(answer: httpx.Response) -> tuple[int, str, str]:
    error = answer.json()["errors"][0]
    return answer.status_code, error["code"], error["message"]


def test_a_critical_finding_is_denied_by_tag_and_by_digest_naming_the_cve(
    up: Upstreams, proxy: ProxyFactory
) -> None:
    image = up.image(REPO, "v1", "critical")
    url = up.resource_url(REPO, image.digest)
    up.analysis.set_discovery(url, "FINISHED_SUCCESS")
    up.analysis.add_vulnerability(url, "CVE-2024-0001", "CRITICAL", "openssl", "3.0.1", "3.0.7")
    up.analysis.add_vulnerability(url, "CVE-2024-0002", "HIGH", "zlib", "1.2", None)
    running = proxy(up.upstream, **up.gate_settings())
    for reference in ("v1", image.digest):
        status, code, message = error_of(pull(running.url, reference))
        assert (status, code) == (403, "DENIED")
        assert "CVE-2024-0001 (CRITICAL, openssl 3.0.1, fixed in 3.0.7)" in message
        assert "CVE-2024-0002" not in message  # HIGH is below the default threshold
        assert "vulnerability_gate.allow" in message
    assert httpx.head(f"{running.url}/v2/{REPO}/manifests/v1", headers=ACCEPT).status_code == 200
    # One decision for the digest however many pulls: one query of each kind.
    assert (up.analysis.count("DISCOVERY"), up.analysis.count("VULNERABILITY")) == (1, 1)


def test_an_allow_listed_cve_passes_and_a_clean_image_too(
    up: Upstreams, proxy: ProxyFactory
) -> None:
    listed, clean = up.image(REPO, "listed", "listed"), up.image(REPO, "clean", "clean")
    for image in (listed, clean):
        up.analysis.set_discovery(up.resource_url(REPO, image.digest), "FINISHED_SUCCESS")
    bad = up.resource_url(REPO, listed.digest)
    up.analysis.add_vulnerability(bad, "CVE-2024-0001", "CRITICAL", "openssl", "3.0.1", "3.0.7")
    running = proxy(up.upstream, **up.gate_settings(allow="cve-2024-0001"))
    for _ in range(3):
        assert pull(running.url, "listed").content == listed.manifest
        assert pull(running.url, "clean").content == clean.manifest
    assert up.analysis.count("DISCOVERY") == 2  # one per digest within the TTL


def test_per_repository_override_blocks_at_high(up: Upstreams, proxy: ProxyFactory) -> None:
    strict, loose = "proj/strict/app", "proj/loose/app"
    for repo in (strict, loose):
        image = up.image(repo, "v1", "same")
        url = up.resource_url(repo, image.digest)
        up.analysis.set_discovery(url, "FINISHED_SUCCESS")
        up.analysis.add_vulnerability(url, "CVE-2024-0003", "HIGH", "bash", "5.1", "5.2")
    overrides = '{"proj/strict/": {"block_severity": "HIGH"}}'
    running = proxy(up.upstream, **up.gate_settings(repositories=overrides))
    status, _, message = error_of(pull(running.url, "v1", strict))
    assert status == 403 and "vulnerability_gate.repositories.proj/strict/.allow" in message
    assert pull(running.url, "v1", loose).status_code == 200


@pytest.mark.parametrize(("unscanned", "status"), [("allow", 200), ("deny", 403)])
def test_an_unscanned_image_follows_the_setting(
    up: Upstreams, proxy: ProxyFactory, unscanned: str, status: int
) -> None:
    image = up.image(REPO, "v1", "unscanned")
    up.analysis.set_discovery(up.resource_url(REPO, image.digest), None)  # no DISCOVERY yet
    running = proxy(up.upstream, **up.gate_settings(unscanned=unscanned))
    answer = pull(running.url, "v1")
    assert answer.status_code == status
    if status == 403:
        assert "no finished vulnerability scan (not_scanned)" in error_of(answer)[2]
    assert up.analysis.count("VULNERABILITY") == 0


def test_index_passes_and_each_child_asked_for_is_gated(up: Upstreams, proxy: ProxyFactory) -> None:
    amd = build_image([make_layer({"a": b"amd"})], architecture="amd64")
    arm = build_image([make_layer({"a": b"arm"})], architecture="arm64")
    index = build_index([amd, arm])
    up.gar.put_image("us", REPO, "multi", index)
    for child in (amd, arm):
        up.analysis.set_discovery(up.resource_url(REPO, child.digest), "FINISHED_SUCCESS")
    arm_url = up.resource_url(REPO, arm.digest)
    up.analysis.add_vulnerability(arm_url, "CVE-2024-0004", "CRITICAL", "musl", "1.2", "1.3")
    running = proxy(up.upstream, **up.gate_settings(unscanned="deny"))
    assert pull(running.url, "multi").content == index.manifest  # not scanned; not gated
    assert pull(running.url, amd.digest).content == amd.manifest
    assert error_of(pull(running.url, arm.digest))[:2] == (403, "DENIED")
    assert up.analysis.count("DISCOVERY") == 2  # the children only


def test_gate_off_by_default_asks_nothing(up: Upstreams, proxy: ProxyFactory) -> None:
    image = up.image(REPO, "v1", "off")
    url = up.resource_url(REPO, image.digest)
    up.analysis.add_vulnerability(url, "CVE-2024-0001", "CRITICAL", "openssl", "3.0.1", "3.0.7")
    running = proxy(up.upstream, apis__container_analysis=up.url)
    assert pull(running.url, "v1").content == image.manifest
    assert running.services.gate is None and running.services.manifests.gate is None
    assert sum(up.analysis.queries.values()) == 0


def test_analysis_outage_fails_the_pull_and_is_not_cached(
    up: Upstreams, proxy: ProxyFactory
) -> None:
    image = up.image(REPO, "v1", "outage")
    running = proxy(up.upstream, **up.gate_settings(), transport__retries="0")
    up.analysis.access_tokens = {"nobody-has-this"}  # every analysis query: 401
    failed = pull(running.url, "v1")
    assert failed.status_code == 403
    assert error_of(failed)[2].startswith("the vulnerability gate could not ask Container")
    up.analysis.access_tokens = None
    up.analysis.set_discovery(up.resource_url(REPO, image.digest), "FINISHED_SUCCESS")
    assert pull(running.url, "v1").content == image.manifest


# ---------------------------------------------------------------- waiting, stepped clock


@pytest.fixture
async def client_of(up: Upstreams) -> AsyncIterator[VulnerabilityClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield VulnerabilityClient(GoogleApi(http, None), up.url)


def gate_with(client: VulnerabilityClient, clock: ManualClock, wait: str) -> VulnerabilityGate:
    env = {
        "GAR_PROXY_VULNERABILITY_GATE_UNSCANNED": "wait",
        "GAR_PROXY_VULNERABILITY_GATE_WAIT_SECONDS": wait,
    }
    return VulnerabilityGate(load_settings(None, env=env).vulnerability_gate, client, clock)


async def test_wait_sees_the_scan_finish_then_decides(
    up: Upstreams, client_of: VulnerabilityClient
) -> None:
    digest = Digest.parse("sha256:" + "a" * 64)
    url = up.resource_url(REPO, str(digest))
    up.analysis.set_discovery(url, "PENDING", "SCANNING", "SCANNING", "FINISHED_SUCCESS")
    up.analysis.add_vulnerability(url, "CVE-2024-0005", "CRITICAL", "glibc", "2.36", None)
    clock = ManualClock()
    gate = gate_with(client_of, clock, "60")
    repo = Repository(REPO, "us")
    with pytest.raises(RegistryError, match=r"CVE-2024-0005 \(CRITICAL, glibc 2.36, no fix yet\)"):
        await gate.check(repo, digest, mt.OCI_MANIFEST)
    assert clock.slept == [5.0, 10.0]  # waited in steps, never through real time
    with pytest.raises(RegistryError):  # the final decision is cached
        await gate.check(repo, digest, mt.OCI_MANIFEST)
    assert up.analysis.count("VULNERABILITY") == 1


async def test_wait_runs_out_and_denies(up: Upstreams, client_of: VulnerabilityClient) -> None:
    digest = Digest.parse("sha256:" + "b" * 64)
    up.analysis.set_discovery(up.resource_url(REPO, str(digest)), "SCANNING")
    clock = ManualClock()
    gate = gate_with(client_of, clock, "12")
    with pytest.raises(RegistryError, match="was not scanned within 12 s") as denied:
        await gate.check(Repository(REPO, "us"), digest, mt.OCI_MANIFEST)
    assert denied.value.code.wire == "DENIED"
    assert clock.slept == [5.0, 7.0]  # cut short at the deadline
    # An unfinished decision lives 30 s at most; after that the gate asks again.
    clock.advance(31)
    up.analysis.set_discovery(up.resource_url(REPO, str(digest)), "FINISHED_SUCCESS")
    await gate.check(Repository(REPO, "us"), digest, mt.OCI_MANIFEST)
