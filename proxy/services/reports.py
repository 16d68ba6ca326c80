"""What GAR knows about an image or repository, as plain JSON-ready dicts.

Shared by the CLI (``gar-proxy vulns|sbom|cleanup-preview|where``) and the admin
paths of the server (``/_gar-proxy/...``), so both say the same thing. A tag is
resolved to a digest first (one registry ``HEAD``; the gate is not asked: these
reports are how a user finds out why it refused). The ``proxy.gar`` modules' own
errors become ``RegistryError`` here (``proxy.gar.errors``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from proxy.gar import cleanup, sbom
from proxy.gar.errors import GAR_ERRORS, as_registry_error
from proxy.gar.vulnerabilities import Report, Resource, ScanStatus, wait_for_scan
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import ImageReference, Repository
from proxy.services.container import Services
from proxy.services.gate import resource_of

T = TypeVar("T")


async def _gar(work: Awaitable[T]) -> T:
    try:
        return await work
    except GAR_ERRORS as error:
        raise as_registry_error(error) from None


async def resolve_image(services: Services, text: str) -> tuple[Repository, Resource]:
    """``[LOCATION-docker.pkg.dev/]PROJECT/REPO/IMAGE[:TAG|@DIGEST]`` as a Resource."""
    image = ImageReference.parse(text)
    repo = await services.locations.resolve(image.repository)
    digest = image.reference
    if not isinstance(digest, Digest):
        info = await services.registry.head_manifest(repo, digest, mt.DEFAULT_ACCEPT)
        if info is None or info.digest is None:
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"{repo}:{digest} is not known")
        digest = info.digest
    return repo, resource_of(repo, digest)


def report_json(resource: Resource, status: ScanStatus, report: Report | None) -> dict[str, Any]:
    return {
        "image": resource.url.removeprefix("https://"),
        "digest": str(resource.digest),
        "scan": {"state": status.state, "reason": status.reason, "updated": status.updated},
        "counts": dict(report.counts) if report else {},
        "findings": [dataclasses.asdict(f) for f in report.findings] if report else [],
    }


async def vulnerabilities(
    services: Services, text: str, wait: float | None = None
) -> dict[str, Any]:
    """The scan status and, when the scan finished, the report; ``wait`` seconds for it."""
    _, resource = await resolve_image(services, text)
    client = services.analysis
    if wait:
        clock = services.clock
        deadline = clock.monotonic() + wait
        waited = wait_for_scan(
            client, resource, deadline=deadline, clock=clock.monotonic, sleep=clock.sleep
        )
        return report_json(resource, ScanStatus("finished"), await _gar(waited))
    status = await _gar(client.scan_status(resource))
    report = await _gar(client.report(resource)) if status.state == "finished" else None
    return report_json(resource, status, report)


async def software_bom(services: Services, text: str) -> dict[str, Any]:
    """The SBOM's packages, or ``"sbom": null`` when the image has none."""
    _, resource = await resolve_image(services, text)
    storage = services.settings.apis.cloud_storage
    found = await _gar(sbom.fetch_sbom(services.analysis, services.google, resource, storage))
    answer: dict[str, Any] = {"image": resource.url.removeprefix("https://"), "sbom": None}
    if found is not None:
        reference, document = found
        answer["sbom"] = {
            "location": reference.location,
            "format": document.format,
            "spec_version": document.spec_version,
            "created": document.created,
            "packages": [dataclasses.asdict(p) for p in document.packages],
        }
    return answer


async def cleanup_preview(
    services: Services, project: str, location: str, repo: str, now: datetime | None = None
) -> dict[str, Any]:
    base = services.settings.apis.artifact_registry
    when = now or datetime.fromtimestamp(services.clock.time(), UTC)
    found = await _gar(cleanup.preview(services.google, base, project, location, repo, when))
    rows = [
        {
            "action": v.action,
            "decided_by": v.decided_by,
            "package": v.version.package,
            "digest": v.version.digest,
            "tags": list(v.version.tags),
            "uploaded": v.version.uploaded.isoformat(),
        }
        for v in found.verdicts
    ]
    name = f"projects/{project}/locations/{location}/repositories/{repo}"
    return {
        "repository": name,
        "dry_run": found.dry_run,
        "notes": found.notes,
        "delete": [r for r in rows if r["action"] == "delete"],
        "keep": [r for r in rows if r["action"] == "keep"],
    }


async def where(services: Services, project: str, repo: str) -> dict[str, Any]:
    """The location ``PROJECT/REPO`` resolves to, and which rule said so."""
    routing = services.settings.routing
    path = f"{project}/{repo}"
    if not services.settings.upstream.is_gar:
        return {"repository": path, "location": None, "why": "upstream is not Artifact Registry"}
    remembered = await services.index.documents.get(f"location:{path}")
    probe = Repository(f"{project.replace(':', '/')}/{repo}/_")  # GAR.md N5
    location = (await services.locations.resolve(probe)).location
    routes = [r for r in routing.routes if path == r.prefix or path.startswith(r.prefix + "/")]
    if routes:
        route = max(routes, key=lambda r: len(r.prefix))
        why = f"route {route.prefix}={route.location} (routing.routes)"
    elif remembered is not None and remembered[1].decode() == location:
        why = "found earlier by the Artifact Registry API, remembered in the cache index"
    elif location != routing.location:
        why = "found by the Artifact Registry API (projects.locations.repositories.get)"
    elif not routing.resolve_locations or services.locations.offline:
        why = "the default, routing.location (routing.resolve_locations is off or offline)"
    else:
        why = "the default, routing.location (the Artifact Registry API did not find it)"
    return {"repository": path, "location": location, "why": why}
