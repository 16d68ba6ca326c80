"""When gar-proxy's own credentials stop working (an expired login, a revoked key), what
is cached keeps being served: tags stale within ``cache.max_stale``, with a warning and
the stale counter, as in an outage. A client asking for something not cached gets the
credentials error (DENIED, with the reason), not a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.fakes.google import WORKLOAD_IDENTITY_UNBOUND, FakeMetadata
from testkit.fakes.google_sts import IssuedTokens
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}


def test_cached_tags_are_served_stale_when_upstream_rejects_the_credentials(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_gar(auth="gcp", access_tokens={"ya29.good"})
    image = build_image([make_layer({"c": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    fake.put_image("us", REPO, "2.0", build_image([make_layer({"c": b"2"})]))
    running = proxy(
        fake.upstream,
        upstream__auth="basic",
        upstream__username="oauth2accesstoken",
        upstream__password="ya29.good",
        cache__tag_ttl="0",
        cache__stale_recheck="0",
        cache__revalidate_window="0",  # each request waits for its revalidation
    )
    with httpx.Client(base_url=running.url, timeout=30) as http:
        assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
        fake.access_tokens.clear()  # the login expired: the realm refuses it now
        fake.issued_tokens.clear()
        for _ in range(3):
            stale = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
            assert stale.status_code == 200, stale.text
            assert stale.content == image.manifest
        sample = running.services.metrics.registry.get_sample_value
        assert sample("garproxy_stale_tags_served_total") == 3
        warnings = [r.getMessage() for r in caplog.records if "serving stale tag" in r.getMessage()]
        assert warnings and "credentials" in warnings[0]
        uncached = http.get(f"/v2/{REPO}/manifests/2.0", headers=ACCEPT)
        assert uncached.status_code == 403
        assert uncached.json()["errors"][0]["code"] == "DENIED"
        assert "credentials" in uncached.json()["errors"][0]["message"]


# --------------------------------------------------------------------------- metadata server


@pytest.fixture
def metadata() -> Iterator[FakeMetadata]:
    server = FakeMetadata()
    with server.serving():
        yield server


def on_metadata(
    metadata: FakeMetadata, fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> tuple[FakeGAR, RunningProxy]:
    """The proxy's only credential source is ``metadata`` (GCE or GKE), failing as the
    test made it fail before the proxy starts (its start-up report asks for a token)."""
    fake = fake_gar(auth="gcp")
    fake.access_tokens = IssuedTokens(metadata)
    fake.put_image("us", REPO, "1.0", build_image([make_layer({"m": b"1"})]))
    host = metadata.url.removeprefix("http://")
    return fake, proxy(fake.upstream, auth="gcp", gcp__metadata_host=host)


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    first = response.json()["errors"][0]
    return response.status_code, first["code"], first["message"]


def test_a_metadata_server_5xx_burst_is_a_retryable_503(
    metadata: FakeMetadata, fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    """google-auth gives up after five tries and raises a final RefreshError (docs/GAR.md
    R10); it is still the server's trouble: 503 with Retry-After, not a 403 verdict."""
    metadata.fail(500, "GKE Metadata Server: Internal Server Error")  # R9
    fake, running = on_metadata(metadata, fake_gar, proxy)
    with httpx.Client(base_url=running.url, timeout=60) as http:
        first = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
        tries = metadata.token_requests
        again = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
    status, code, message = refusal(first)
    assert (status, code) == (503, "UNAVAILABLE")
    assert first.headers["retry-after"] == "5"
    assert "retry in 5 s" in message and "500" in message
    assert tries == 5  # google-auth's own retries, once
    assert refusal(again)[:2] == (503, "UNAVAILABLE")
    assert metadata.token_requests == tries  # within the cooldown: not asked again
    assert fake.count() == 0


def test_unbound_workload_identity_says_to_bind_the_service_accounts(
    metadata: FakeMetadata, fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    metadata.fail(403, WORKLOAD_IDENTITY_UNBOUND)
    fake, running = on_metadata(metadata, fake_gar, proxy)
    with httpx.Client(base_url=running.url, timeout=60) as http:
        status, code, message = refusal(http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT))
    assert (status, code) == (403, "DENIED")
    assert "Unable to generate access token; IAM returned 403 Forbidden" in message  # GKE's words
    assert "iam.gke.io/gcp-service-account" in message and "workloadIdentityUser" in message
    assert "create a new key" not in message.lower()
    # Not retried (a retried refresh makes five tries); the start-up report and the
    # readiness check may each have asked once besides the client.
    assert metadata.token_requests < 5
    assert fake.count() == 0  # nothing reached GAR without a token


def test_a_missing_service_account_is_named(
    metadata: FakeMetadata, fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    metadata.fail(404, "Not Found\n", paths=("info",))  # google-auth#745
    fake, running = on_metadata(metadata, fake_gar, proxy)
    with httpx.Client(base_url=running.url, timeout=60) as http:
        status, code, message = refusal(http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT))
    assert (status, code) == (403, "DENIED")
    assert "knows no service account" in message and "404" in message
    assert fake.count() == 0
