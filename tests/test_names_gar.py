"""GAR's own spellings of image names through the proxy, against the evidence-shaped fake.

A domain-scoped project ``example.com:proj`` is written ``example.com/proj`` in image
names and keeps its colon in REST resource names (docs/GAR.md N5); the regional endpoint
``docker.LOCATION.rep.pkg.dev`` is a host of its own that a client may name (N6). Bare
names whose first segment has a dot are another registry's unless the domain is a
declared project domain (DESIGN.md "Naming and locations").
"""

from __future__ import annotations

import httpx

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_analysis import FakeAnalysis
from testkit.images import build_image, make_layer
from testkit.servers import serve_in_thread
from tests.conftest import FakeGarFactory, ProxyFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
DOMAIN_IMAGE = "example.com/proj/repo/app"


def api(fake: FakeGAR) -> dict[str, str]:
    return {
        "routing__resolve_locations": "true",
        "routing__check_repositories": "true",
        "apis__artifact_registry": fake.url,
    }


def test_a_domain_scoped_project_is_pulled_by_its_host_qualified_name(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"d": b"domain"})])
    fake.put_image("europe-west1", DOMAIN_IMAGE, "1", image)
    running = proxy(fake.upstream, **api(fake), routing__project_domains="example.com")
    with httpx.Client(base_url=running.url, timeout=30) as http:
        qualified = http.get(
            f"/v2/europe-west1-docker.pkg.dev/{DOMAIN_IMAGE}/manifests/1", headers=ACCEPT
        )
        bare = http.get(f"/v2/{DOMAIN_IMAGE}/manifests/1", headers=ACCEPT)  # located by the API
        short = http.get("/v2/example.com/proj/repo/manifests/1", headers=ACCEPT)
    assert qualified.status_code == bare.status_code == 200, bare.text
    assert qualified.content == bare.content == image.manifest
    rest = "/v1/projects/example.com:proj/locations/europe-west1/repositories/repo$"
    assert fake.count("GET", "metadata", path=rest) >= 1  # the colon, as the API writes it
    assert fake.count("GET", "manifest", path=f"/europe-west1/v2/{DOMAIN_IMAGE}/") == 1
    assert short.status_code == 400 and "DOMAIN/PROJECT/REPOSITORY/IMAGE" in short.text


def test_a_bare_dotted_name_is_another_registrys_unless_its_domain_is_declared(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    fake.put_image("us", DOMAIN_IMAGE, "1", build_image([make_layer({"d": b"x"})]))
    running = proxy(fake.upstream)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        bare = http.get(f"/v2/{DOMAIN_IMAGE}/manifests/1", headers=ACCEPT)
        via_ns = http.get(
            f"/v2/{DOMAIN_IMAGE}/manifests/1", params={"ns": "us-docker.pkg.dev"}, headers=ACCEPT
        )
    error = bare.json()["errors"][0]
    assert (bare.status_code, error["code"]) == (404, "NAME_UNKNOWN")
    assert "routing.project_domains" in error["message"]
    assert "us-docker.pkg.dev/example.com/PROJECT/REPO/IMAGE" in error["message"].replace(
        "LOCATION", "us"
    )
    assert via_ns.status_code == 200  # after a GAR host the domain is unambiguous
    assert fake.count("GET", "manifest") == 1


def test_a_regional_endpoint_name_goes_to_the_regional_host(
    fake_gar: FakeGarFactory, proxy: ProxyFactory
) -> None:
    fake = fake_gar(auth="none")
    image = build_image([make_layer({"r": b"regional"})])
    fake.put_image("me-central2", "proj/repo/app", "1", image)
    running = proxy(fake.upstream, upstream__regional_url=fake.url + "/rep/{location}")
    with httpx.Client(base_url=running.url, timeout=30) as http:
        regional = http.get(
            "/v2/docker.me-central2.rep.pkg.dev/proj/repo/app/manifests/1", headers=ACCEPT
        )
        layer = http.get(
            f"/v2/proj/repo/app/blobs/{image.layers[0].digest}",
            params={"ns": "docker.me-central2.rep.pkg.dev"},  # containerd's hosts.toml
        )
        standard = http.get(
            "/v2/me-central2-docker.pkg.dev/proj/repo/app/manifests/1", headers=ACCEPT
        )
    assert regional.content == standard.content == image.manifest
    assert layer.content == image.layers[0].data
    calls = [r for r in fake.requests if r.kind in ("manifest", "blob")]
    assert [(r.kind, r.regional) for r in calls] == [("manifest", True), ("blob", True)]
    # the standard spelling was answered from the cache the regional one filled


def test_a_domain_scoped_images_vulnerabilities_are_asked_for_the_colon_project(
    proxy: ProxyFactory,
) -> None:
    gar, analysis = FakeGAR(auth="none"), FakeAnalysis()
    image = build_image([make_layer({"v": b"domain"})])
    gar.put_image("us", DOMAIN_IMAGE, "1", image)
    url = f"https://us-docker.pkg.dev/{DOMAIN_IMAGE}@{image.digest}"
    analysis.set_discovery(url, "FINISHED_SUCCESS")
    analysis.add_vulnerability(url, "CVE-2024-0077", "LOW", "tar", "1.34", None)
    with serve_in_thread(analysis.in_front_of(gar)) as base:
        running = proxy(base + "/{location}", apis__container_analysis=base)
        with httpx.Client(base_url=running.url, timeout=30) as http:
            report = http.get(f"/_gar-proxy/vulns/us-docker.pkg.dev/{DOMAIN_IMAGE}:1")
    assert report.status_code == 200, report.text
    assert report.json()["image"] == url.removeprefix("https://")
    assert [f["cve"] for f in report.json()["findings"]] == ["CVE-2024-0077"]
