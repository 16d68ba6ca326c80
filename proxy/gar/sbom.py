"""An image's SBOM: where Container Analysis says it is, and its packages.

Artifact Registry records a generated SBOM as an SBOM_REFERENCE occurrence whose
``sbomReference.payload.predicate`` holds the document's ``location`` (usually a
``gs://`` object), ``mimeType`` and ``digest``. The document is SPDX 2.x JSON (what GAR
writes) or CycloneDX 1.x JSON (what other tools upload); both become the same packages.
An image without an SBOM is answered with None, not an error.

>>> doc = {"spdxVersion": "SPDX-2.3", "packages": [{"name": "zlib", "versionInfo": "1.3",
...        "licenseDeclared": "Zlib", "supplier": "Organization: Debian"}]}
>>> parse_document(doc).packages
(Package(name='zlib', version='1.3', purl=None, licenses=('Zlib',), supplier='Debian'),)
>>> download_url("gs://bucket/sboms/app.spdx.json")
'https://storage.googleapis.com/bucket/sboms/app.spdx.json'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from proxy.gar.jsonapi import JsonGetter
from proxy.gar.vulnerabilities import Resource, VulnerabilityClient

STORAGE = "https://storage.googleapis.com"
# SPDX's words for "nobody said"; they are not licenses or suppliers.
_UNSAID = {"", "NOASSERTION", "NONE"}


class SbomUnreadable(Exception):
    """The referenced document is neither SPDX 2.x nor CycloneDX 1.x JSON."""


@dataclass(frozen=True, slots=True)
class SbomReference:
    location: str
    mime_type: str | None = None
    digest: Mapping[str, str] | None = None  # algorithm -> hex of the document
    referrer_id: str | None = None


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    version: str | None
    purl: str | None
    licenses: tuple[str, ...]
    supplier: str | None


@dataclass(frozen=True, slots=True)
class Sbom:
    format: Literal["spdx", "cyclonedx"]
    spec_version: str
    packages: tuple[Package, ...]
    created: str | None = None


def find_reference(occurrences: list[dict[str, Any]]) -> SbomReference | None:
    """The newest SBOM_REFERENCE occurrence's document, or None when there is none."""
    usable = [
        o
        for o in occurrences
        if o.get("kind") == "SBOM_REFERENCE"
        and ((o.get("sbomReference") or {}).get("payload") or {})
        .get("predicate", {})
        .get("location")
    ]
    if not usable:
        return None
    newest = max(usable, key=lambda o: str(o.get("updateTime") or o.get("createTime") or ""))
    predicate = newest["sbomReference"]["payload"]["predicate"]
    return SbomReference(
        location=str(predicate["location"]),
        mime_type=predicate.get("mimeType"),
        digest=predicate.get("digest"),
        referrer_id=predicate.get("referrerId"),
    )


def download_url(location: str, storage: str = STORAGE) -> str:
    """A ``gs://bucket/object`` location as a Cloud Storage download URL; https stays."""
    if not location.startswith("gs://"):
        return location
    bucket, _, path = location[len("gs://") :].partition("/")
    return f"{storage.rstrip('/')}/{bucket}/{quote(path)}"


def _said(value: Any) -> str | None:
    text = str(value or "").strip()
    return None if text in _UNSAID else text


def _spdx_supplier(value: Any) -> str | None:
    """``Organization: X`` or ``Person: Y (mail)`` -> the name."""
    text = _said(value)
    if text is None:
        return None
    kind, sep, name = text.partition(":")
    return name.strip() if sep and kind in ("Organization", "Person", "Tool") else text


def _spdx_package(body: Mapping[str, Any]) -> Package:
    purls = [
        str(ref.get("referenceLocator"))
        for ref in body.get("externalRefs") or ()
        if ref.get("referenceType") == "purl"
    ]
    license_ = _said(body.get("licenseDeclared")) or _said(body.get("licenseConcluded"))
    return Package(
        name=str(body.get("name") or ""),
        version=_said(body.get("versionInfo")),
        purl=purls[0] if purls else None,
        licenses=(license_,) if license_ else (),
        supplier=_spdx_supplier(body.get("supplier")),
    )


def _cyclonedx_components(components: Any) -> Iterator[Mapping[str, Any]]:
    for component in components or ():
        yield component
        yield from _cyclonedx_components(component.get("components"))


def _cyclonedx_licenses(entries: Any) -> tuple[str, ...]:
    found: list[str] = []
    for entry in entries or ():
        license_ = entry.get("license") or {}
        text = entry.get("expression") or license_.get("id") or license_.get("name")
        if text:
            found.append(str(text))
    return tuple(found)


def _cyclonedx_package(body: Mapping[str, Any]) -> Package:
    supplier = (body.get("supplier") or {}).get("name") or body.get("publisher")
    return Package(
        name=str(body.get("name") or ""),
        version=_said(body.get("version")),
        purl=_said(body.get("purl")),
        licenses=_cyclonedx_licenses(body.get("licenses")),
        supplier=_said(supplier),
    )


def parse_document(document: Mapping[str, Any]) -> Sbom:
    spdx = str(document.get("spdxVersion") or "")
    if spdx.startswith("SPDX-2."):
        packages = tuple(_spdx_package(p) for p in document.get("packages") or ())
        created = (document.get("creationInfo") or {}).get("created")
        return Sbom("spdx", spdx, packages, created)
    spec = str(document.get("specVersion") or "")
    if document.get("bomFormat") == "CycloneDX" and spec.startswith("1."):
        components = _cyclonedx_components(document.get("components"))
        packages = tuple(_cyclonedx_package(c) for c in components)
        created = (document.get("metadata") or {}).get("timestamp")
        return Sbom("cyclonedx", spec, packages, created)
    raise SbomUnreadable(
        f"not an SPDX 2.x or CycloneDX 1.x JSON document (spdxVersion={spdx!r}, "
        f"bomFormat={document.get('bomFormat')!r}, specVersion={spec!r})"
    )


async def fetch_sbom(
    client: VulnerabilityClient,
    documents: JsonGetter,
    resource: Resource,
    storage: str = STORAGE,
) -> tuple[SbomReference, Sbom] | None:
    """The image's SBOM and where it was found, or None when it has none.

    ``documents`` fetches the referenced document (Cloud Storage, authenticated); a
    reference whose document is gone (404) counts as no SBOM.
    """
    reference = find_reference(await client.occurrences(resource, "SBOM_REFERENCE"))
    if reference is None:
        return None
    document = await documents.get_json(download_url(reference.location, storage))
    if document is None:
        return None
    return reference, parse_document(document)
