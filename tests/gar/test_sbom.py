"""SBOM references and SPDX / CycloneDX documents read into packages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from proxy.gar.sbom import (
    Package,
    SbomUnreadable,
    download_url,
    fetch_sbom,
    find_reference,
    parse_document,
)
from proxy.gar.vulnerabilities import Resource, VulnerabilityClient
from proxy.oci.digest import Digest

IMAGE = Resource("us", "proj", "repo", "app", Digest("sha256", "d" * 64))
LOCATION = "gs://proj-sbom-us/us-docker.pkg.dev/proj/repo/app/sha256:dddd/sbom.spdx.json"

SPDX = {
    "spdxVersion": "SPDX-2.3",
    "dataLicense": "CC0-1.0",
    "SPDXID": "SPDXRef-DOCUMENT",
    "name": "us-docker.pkg.dev/proj/repo/app@sha256:dddd",
    "documentNamespace": "https://spdx.org/spdxdocs/app-5b0e0b5e",
    "creationInfo": {"created": "2026-05-30T08:00:00Z", "creators": ["Tool: GoogleSBOMGenerator"]},
    "packages": [
        {
            "SPDXID": "SPDXRef-Package-openssl",
            "name": "openssl",
            "versionInfo": "3.0.11-1~deb12u2",
            "supplier": "Organization: Debian",
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "Apache-2.0",
            "externalRefs": [
                {
                    "referenceCategory": "SECURITY",
                    "referenceType": "cpe23Type",
                    "referenceLocator": "cpe:2.3:a:openssl:openssl:3.0.11:*:*:*:*:*:*:*",
                },
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64",
                },
            ],
        },
        {
            "SPDXID": "SPDXRef-Package-requests",
            "name": "requests",
            "versionInfo": "2.31.0",
            "supplier": "Person: Kenneth Reitz (me@kennethreitz.org)",
            "downloadLocation": "https://pypi.org/project/requests",
            "licenseConcluded": "Apache-2.0",
            "licenseDeclared": "NOASSERTION",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE_MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": "pkg:pypi/requests@2.31.0",
                }
            ],
        },
        {
            "SPDXID": "SPDXRef-Package-unknown",
            "name": "base-files",
            "versionInfo": "NOASSERTION",
            "supplier": "NOASSERTION",
            "downloadLocation": "NONE",
            "licenseConcluded": "NONE",
        },
    ],
    "relationships": [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-Package-openssl",
        }
    ],
}

CYCLONEDX = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
    "version": 1,
    "metadata": {
        "timestamp": "2026-05-30T09:00:00Z",
        "component": {"type": "container", "name": "app", "version": "sha256:dddd"},
    },
    "components": [
        {
            "type": "library",
            "name": "express",
            "version": "4.18.2",
            "purl": "pkg:npm/express@4.18.2",
            "licenses": [{"license": {"id": "MIT"}}],
            "supplier": {"name": "OpenJS Foundation"},
            "components": [
                {
                    "type": "library",
                    "name": "body-parser",
                    "version": "1.20.1",
                    "purl": "pkg:npm/body-parser@1.20.1",
                    "licenses": [{"license": {"name": "MIT License"}}],
                }
            ],
        },
        {
            "type": "operating-system",
            "name": "alpine",
            "version": "3.19.1",
            "licenses": [{"expression": "GPL-2.0-only OR MIT"}],
            "publisher": "Alpine Linux",
        },
    ],
}


def test_spdx_packages() -> None:
    sbom = parse_document(SPDX)
    assert (sbom.format, sbom.spec_version, sbom.created) == (
        "spdx",
        "SPDX-2.3",
        "2026-05-30T08:00:00Z",
    )
    assert sbom.packages == (
        Package(
            "openssl",
            "3.0.11-1~deb12u2",
            "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64",
            ("Apache-2.0",),
            "Debian",
        ),
        Package(
            "requests",
            "2.31.0",
            "pkg:pypi/requests@2.31.0",
            ("Apache-2.0",),
            "Kenneth Reitz (me@kennethreitz.org)",
        ),
        Package("base-files", None, None, (), None),
    )


def test_cyclonedx_packages_including_nested_components() -> None:
    sbom = parse_document(CYCLONEDX)
    assert (sbom.format, sbom.spec_version, sbom.created) == (
        "cyclonedx",
        "1.5",
        "2026-05-30T09:00:00Z",
    )
    assert sbom.packages == (
        Package("express", "4.18.2", "pkg:npm/express@4.18.2", ("MIT",), "OpenJS Foundation"),
        Package("body-parser", "1.20.1", "pkg:npm/body-parser@1.20.1", ("MIT License",), None),
        Package("alpine", "3.19.1", None, ("GPL-2.0-only OR MIT",), "Alpine Linux"),
    )


@pytest.mark.parametrize(
    "document",
    [{"spdxVersion": "SPDX-3.0"}, {"bomFormat": "CycloneDX", "specVersion": "2.0"}, {}],
)
def test_other_documents_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(SbomUnreadable):
        parse_document(document)


def reference(location: str, update: str) -> dict[str, Any]:
    return {
        "name": "projects/proj/occurrences/s1",
        "kind": "SBOM_REFERENCE",
        "resourceUri": IMAGE.url,
        "updateTime": update,
        "sbomReference": {
            "payloadType": "application/vnd.in-toto+json",
            "payload": {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": "https://bcid.corp.google.com/reference/v0.1",
                "subject": [{"name": IMAGE.url, "digest": {"sha256": "d" * 64}}],
                "predicate": {
                    "referrerId": "https://artifactregistry.googleapis.com",
                    "location": location,
                    "mimeType": "application/spdx+json",
                    "digest": {"sha256": "e" * 64},
                },
            },
        },
    }


def test_the_newest_reference_is_found() -> None:
    found = find_reference(
        [
            reference("gs://old/sbom.json", "2026-01-01T00:00:00Z"),
            reference(LOCATION, "2026-05-30T08:00:00Z"),
        ]
    )
    assert found is not None
    assert (found.location, found.mime_type, found.referrer_id) == (
        LOCATION,
        "application/spdx+json",
        "https://artifactregistry.googleapis.com",
    )
    assert find_reference([]) is None


def test_gs_locations_become_storage_urls() -> None:
    assert download_url(LOCATION) == (
        "https://storage.googleapis.com/proj-sbom-us/us-docker.pkg.dev/proj/repo/app/sha256%3Adddd/sbom.spdx.json"
    )
    assert download_url("https://example.com/sbom.json") == "https://example.com/sbom.json"


class FakeApis:
    def __init__(self, occurrences: list[dict[str, Any]], documents: dict[str, dict[str, Any]]):
        self.occurrences = occurrences
        self.documents = documents
        self.urls: list[str] = []

    async def get_json(
        self, url: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        self.urls.append(url)
        if url.endswith("/occurrences"):
            assert (params or {})["filter"].endswith('kind="SBOM_REFERENCE"')
            return {"occurrences": self.occurrences}
        return self.documents.get(url)


async def test_fetch_follows_the_reference_to_the_document() -> None:
    api = FakeApis(
        [reference("https://sboms.example/app.cdx.json", "2026-05-30T08:00:00Z")],
        {"https://sboms.example/app.cdx.json": CYCLONEDX},
    )
    found = await fetch_sbom(VulnerabilityClient(api, "https://ca.example"), api, IMAGE)
    assert found is not None
    assert found[1].format == "cyclonedx"
    assert len(found[1].packages) == 3
    assert api.urls == [
        "https://ca.example/v1/projects/proj/occurrences",
        "https://sboms.example/app.cdx.json",
    ]


async def test_an_image_without_an_sbom_is_a_normal_none() -> None:
    api = FakeApis([], {})
    assert await fetch_sbom(VulnerabilityClient(api, "https://ca.example"), api, IMAGE) is None
    assert len(api.urls) == 1  # no document was asked for
