"""The registry-token trade against GAR's token endpoint: what it says reaches the client.

GAR's ping names only a realm (docs/GAR.md A1); its token endpoint refuses with IAM's
words, 403 "(or it may not exist)" to a principal without permission (A5), 401 to
credentials it cannot verify (A6). The proxy passes GAR's reason on, in the OCI error
message and in the log, instead of one "refused gar-proxy's credentials" for all.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR, Principal
from testkit.images import build_image, make_layer
from tests.conftest import FakeGarFactory, ProxyFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
REPO = "proj/repo/app"
SCOPED = "ya29.scoped-to-another-repository"


def gar(fake_gar: FakeGarFactory) -> FakeGAR:
    """GAR as a client of its token service sees it: a raw access token is refused."""
    fake = fake_gar(auth="gcp", registry_token_only=True, access_tokens={"ya29.good"})
    fake.put_image("us", REPO, "1.0", build_image([make_layer({"t": b"1"})]))
    return fake


def via_token_service(
    fake: FakeGAR, proxy: ProxyFactory, password: str, **keys: str
) -> httpx.Client:
    running = proxy(
        fake.upstream,
        upstream__auth="basic",
        upstream__username="oauth2accesstoken",
        upstream__password=password,
        **keys,
    )
    return httpx.Client(base_url=running.url, timeout=30)


def first_error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["errors"][0]
    return response.status_code, error["code"], error["message"]


def test_a_challenge_without_service_buys_a_token(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = gar(fake_gar)
    fake.repository_challenge_service = False  # realm only, as GAR's ping answers
    with via_token_service(fake, proxy, "ya29.good") as http:
        assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
    issued = list(fake.issued_tokens.values())
    assert {t.service for t in issued} == {None}  # none made up
    # One for the pull; the upstream check's login (no scope) may have bought another.
    assert [t.scopes for t in issued if t.scopes] == [{"proj/repo/app": frozenset({"pull"})}]


def test_a_403_at_the_token_endpoint_passes_gars_reason(
    fake_gar: FakeGarFactory, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake = gar(fake_gar)
    fake.grant(SCOPED, Principal.on_repositories(("us", "proj", "other")))
    with via_token_service(fake, proxy, SCOPED) as http:
        answer = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
    status, code, message = first_error(answer)
    gars = (
        'Permission "artifactregistry.repositories.downloadArtifacts" denied on resource '
        '"projects/proj/locations/us/repositories/repo" (or it may not exist)'
    )
    assert (status, code) == (403, "DENIED")
    assert gars in message and "repository:proj/repo/app:pull" in message
    assert "credentials" not in message  # a permission answer, not a bad login
    assert any(gars in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_a_401_at_the_token_endpoint_is_a_credential_failure(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = gar(fake_gar)
    with via_token_service(fake, proxy, "ya29.expired") as http:
        status, code, message = first_error(http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT))
    assert (status, code) == (403, "DENIED")
    assert "rejected gar-proxy's credentials (HTTP 401)" in message
    assert "authentication failed" in message  # GAR's words (docs/GAR.md A6)
    assert "ya29.expired" not in message
    assert fake.count("GET", "token") >= 1


def test_trouble_at_the_token_endpoint_is_upstream_trouble(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    from testkit.fakes.gar import Fault

    fake = gar(fake_gar)
    fake.add_fault(Fault(kind="token", status=503, retry_after=1))
    with via_token_service(fake, proxy, "ya29.good", transport__retries="1") as http:
        answer = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
        fake.reset_counts()
        again = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
    # Tried once more after the pause it asked for, as any upstream 503, then passed on.
    assert fake.count("GET", "token") == 2
    for refused in (answer, again):
        assert first_error(refused)[:2] == (503, "UNAVAILABLE")
        assert refused.headers["retry-after"] == "1"
