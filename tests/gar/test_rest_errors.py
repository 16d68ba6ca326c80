"""Google's REST refusals reach the user in Google's words, and the scope each API takes.

Container Analysis lists only ``cloud-platform`` (docs/GAR.md R6): a proxy running with
``gcp.read_only`` asks it with a cloud-platform token (it was refused with
ACCESS_TOKEN_SCOPE_INSUFFICIENT), while registry pulls and the Artifact Registry API
keep the read-only token. A disabled API is named with its reason (R2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_analysis import FakeAnalysis
from testkit.fakes.gar_iam import CLOUD_PLATFORM, CLOUD_PLATFORM_READ_ONLY
from testkit.fakes.google import FakeOAuth
from testkit.fakes.google_sts import IssuedTokens
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy
from testkit.servers import serve_in_thread
from tests.conftest import ProxyFactory

REPO = "proj/repo/app"


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    issuer = FakeOAuth()
    with issuer.serving():
        yield issuer


@pytest.fixture
def google(oauth: FakeOAuth) -> Iterator[tuple[FakeGAR, FakeAnalysis, str]]:
    """GAR and Container Analysis that accept what the fake OAuth issued, and know its
    scopes."""
    tokens = IssuedTokens(oauth)
    gar = FakeGAR(auth="gcp", token_scopes=tokens.scopes_of)
    gar.access_tokens = tokens
    analysis = FakeAnalysis(access_tokens=tokens, scopes=tokens.scopes_of)
    with serve_in_thread(analysis.in_front_of(gar)) as url:
        yield gar, analysis, url


def read_only_proxy(
    google: tuple[FakeGAR, FakeAnalysis, str], oauth: FakeOAuth, proxy: ProxyFactory, tmp: Path
) -> RunningProxy:
    url = google[2]
    key = tmp / "key.json"
    key.write_text(json.dumps(oauth.service_account().info))
    return proxy(
        url + "/{location}",
        auth="gcp",
        gcp__credentials_file=str(key),
        gcp__read_only="true",
        apis__container_analysis=url,
        apis__artifact_registry=url,
    )


def test_read_only_gets_cloud_platform_for_container_analysis(
    google: tuple[FakeGAR, FakeAnalysis, str], oauth: FakeOAuth, proxy: ProxyFactory, tmp_path: Path
) -> None:
    gar, analysis, _ = google
    image = build_image([make_layer({"s": b"scoped"})])
    gar.put_image("us", REPO, "v1", image)
    url = f"https://us-docker.pkg.dev/{REPO}@{image.digest}"
    analysis.set_discovery(url, "FINISHED_SUCCESS")
    analysis.add_vulnerability(url, "CVE-2024-0042", "HIGH", "zlib", "1.2", "1.3", 7.0)
    running = read_only_proxy(google, oauth, proxy, tmp_path)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        pulled = http.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": mt.OCI_MANIFEST})
        report = http.get(f"/_gar-proxy/vulns/{REPO}:v1")
    assert pulled.status_code == 200
    assert report.status_code == 200, report.text
    assert report.json()["findings"][0]["cve"] == "CVE-2024-0042"
    scopes = {issued.scopes for issued in oauth.issued.values()}
    assert scopes == {(CLOUD_PLATFORM_READ_ONLY,), (CLOUD_PLATFORM,)}  # one token each
    assert analysis.count("VULNERABILITY") == 1


def test_a_disabled_api_is_named_with_its_reason(
    google: tuple[FakeGAR, FakeAnalysis, str], oauth: FakeOAuth, proxy: ProxyFactory, tmp_path: Path
) -> None:
    gar, analysis, _ = google
    gar.put_image("us", REPO, "v1", build_image([make_layer({"s": b"off"})]))
    analysis.disabled = True
    running = read_only_proxy(google, oauth, proxy, tmp_path)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        report = http.get(f"/_gar-proxy/vulns/{REPO}:v1")
    error = report.json()["errors"][0]
    assert (report.status_code, error["code"]) == (403, "DENIED")
    said = "SERVICE_DISABLED: Container Analysis API has not been used in project proj"
    assert error["message"].startswith(f"upstream denied access: {said}")
    assert "containeranalysis.googleapis.com/overview?project=proj" in error["message"]
