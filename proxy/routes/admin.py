"""``/_gar-proxy/...``: the CLI's reports as JSON over HTTP, for loopback clients only.

``GET /_gar-proxy/vulns/IMAGE[?wait=SECONDS]``, ``/_gar-proxy/sbom/IMAGE``,
``/_gar-proxy/cleanup-preview/PROJECT/LOCATION/REPO``, ``/_gar-proxy/where/PROJECT/REPO``
answer what ``gar-proxy vulns|sbom|cleanup-preview|where --json`` print (IMAGE as the
CLI takes it: ``PROJECT/REPO/IMAGE:TAG`` or ``...@sha256:...``). They tell what GAR
knows to whoever asks with the proxy's credentials, so only ``admin_allowed`` clients
get an answer.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.oci.errors import ErrorCode, RegistryError
from proxy.routes.common import services
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
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guard(request: Request) -> None:
    if not admin_allowed(request):
        raise RegistryError(ErrorCode.DENIED, f"{PREFIX} answers loopback clients only")


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def _wait(request: Request) -> float | None:
    raw = request.query_params.get("wait")
    try:
        wait = float(raw) if raw else None
    except ValueError:
        wait = -1.0
    if wait is not None and not 0 <= wait <= MAX_WAIT:
        raise RegistryError(ErrorCode.QUERY_INVALID, f"wait must be 0 to {MAX_WAIT:g} seconds")
    return wait


async def vulns(request: Request) -> JSONResponse:
    _guard(request)
    image = request.path_params["image"]
    return _json(await reports.vulnerabilities(services(request), image, _wait(request)))


async def sbom(request: Request) -> JSONResponse:
    _guard(request)
    return _json(await reports.software_bom(services(request), request.path_params["image"]))


async def cleanup_preview(request: Request) -> JSONResponse:
    _guard(request)
    p = request.path_params
    data = await reports.cleanup_preview(services(request), p["project"], p["location"], p["repo"])
    return _json(data)


async def where(request: Request) -> JSONResponse:
    _guard(request)
    p = request.path_params
    return _json(await reports.where(services(request), p["project"], p["repo"]))


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
