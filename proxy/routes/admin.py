"""``/_gar-proxy/...``: the CLI's reports as JSON over HTTP, for loopback clients only.

``GET /_gar-proxy/vulns/IMAGE[?wait=SECONDS]``, ``/_gar-proxy/sbom/IMAGE``,
``/_gar-proxy/cleanup-preview/PROJECT/LOCATION/REPO``, ``/_gar-proxy/where/PROJECT/REPO``
answer what ``gar-proxy vulns|sbom|cleanup-preview|where --json`` print (IMAGE as the
CLI takes it: ``PROJECT/REPO/IMAGE:TAG`` or ``...@sha256:...``). They tell what GAR
knows to whoever asks with the proxy's credentials, so only admin identities (without
client auth: loopback clients) get an answer, and with rules in force only about what
they may pull (``PROJECT/REPO`` for the repository-wide ones).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.auth.access import PULL, authorize, judged_by
from proxy.config import is_loopback
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import ImageReference
from proxy.routes.common import parameters, services
from proxy.services import reports

PREFIX = "/_gar-proxy"
# A scan wait holds the request open; beyond this, use the CLI.
MAX_WAIT = 300.0


def admin_allowed(request: Request) -> bool:
    """Loopback clients, and identities the access rules make admin (client auth on:
    ``AccessControl`` marks them in ``request.state.admin``)."""
    if request.scope.get("state", {}).get("admin"):
        return True
    host = request.client.host if request.client else ""
    return is_loopback(host)


def guard(request: Request, repository: str, asked: str) -> None:
    """Admin identities (without client auth: loopback clients), and only for what the
    caller may pull: a report on an image tells what is in it."""
    access, identity = judged_by(request.scope)
    by_identity = access.authenticator is not None
    if not (access.is_admin(identity) if by_identity else admin_allowed(request)):
        raise RegistryError(ErrorCode.DENIED, f"{PREFIX} answers admins only")
    authorize(request.scope, PULL, repository, asked)


def _image(request: Request) -> str:
    """The path's image, checked as GAR knows it; the text as the reports take it."""
    text: str = request.path_params["image"]
    image = ImageReference.parse(text)
    guard(request, services(request).locations.named(image.repository).path, text)
    return text


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def _wait(request: Request) -> float | None:
    raw = parameters(request).wait
    try:
        wait = float(raw) if raw else None
    except ValueError:
        wait = -1.0
    if wait is not None and not 0 <= wait <= MAX_WAIT:
        raise RegistryError(ErrorCode.QUERY_INVALID, f"wait must be 0 to {MAX_WAIT:g} seconds")
    return wait


async def vulns(request: Request) -> JSONResponse:
    image = _image(request)
    return _json(await reports.vulnerabilities(services(request), image, _wait(request)))


async def sbom(request: Request) -> JSONResponse:
    return _json(await reports.software_bom(services(request), _image(request)))


def _repository(request: Request) -> tuple[str, str]:
    p = request.path_params
    path = f"{p['project']}/{p['repo']}"
    guard(request, path, path)
    return p["project"], p["repo"]


async def cleanup_preview(request: Request) -> JSONResponse:
    project, repo = _repository(request)
    location = request.path_params["location"]
    return _json(await reports.cleanup_preview(services(request), project, location, repo))


async def where(request: Request) -> JSONResponse:
    project, repo = _repository(request)
    return _json(await reports.where(services(request), project, repo))


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}/vulns/{{image:path}}", vulns, methods=["GET"]),
        Route(f"{PREFIX}/sbom/{{image:path}}", sbom, methods=["GET"]),
        Route(
            f"{PREFIX}/cleanup-preview/{{project}}/{{location}}/{{repo}}",
            cleanup_preview,
            methods=["GET"],
        ),
        Route(f"{PREFIX}/where/{{project}}/{{repo}}", where, methods=["GET"]),
    ]
