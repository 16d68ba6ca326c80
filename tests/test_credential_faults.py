"""When gar-proxy's own credentials stop working (an expired login, a revoked key), what
is cached keeps being served: tags stale within ``cache.max_stale``, with a warning and
the stale counter, as in an outage. A client asking for something not cached gets the
credentials error (DENIED, with the reason), not a 5xx."""

from __future__ import annotations

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.images import build_image, make_layer
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
