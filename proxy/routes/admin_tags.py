"""``POST /_gar-proxy/refresh/IMAGE[:TAG]`` and ``POST /_gar-proxy/purge/IMAGE[:TAG|@DIGEST]
[?blobs=true]``: what ``gar-proxy refresh|purge --json`` print, done by this proxy (its
memory, its running fills and readers), for ``admin_allowed`` clients only; with client
auth on, the access middleware has already asked for an admin identity.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.oci.errors import ErrorCode, RegistryError
from proxy.routes.admin import PREFIX, admin_allowed
from proxy.routes.common import services
from proxy.services import maintenance

_YES, _NO = ("1", "true", "yes"), ("", "0", "false", "no")


def _guard(request: Request) -> None:
    if not admin_allowed(request):
        raise RegistryError(ErrorCode.DENIED, f"{request.url.path}: admin clients only")


def _json(data: dict[str, object]) -> JSONResponse:
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def _blobs(request: Request) -> bool:
    raw = request.query_params.get("blobs", "").lower()
    if raw not in _YES + _NO:
        raise RegistryError(ErrorCode.QUERY_INVALID, "blobs must be true or false")
    return raw in _YES


async def refresh(request: Request) -> JSONResponse:
    _guard(request)
    return _json(await maintenance.refresh(services(request), request.path_params["image"]))


async def purge(request: Request) -> JSONResponse:
    _guard(request)
    blobs = _blobs(request)
    image = request.path_params["image"]
    return _json(await maintenance.purge(services(request), image, blobs=blobs))


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}/refresh/{{image:path}}", refresh, methods=["POST"]),
        Route(f"{PREFIX}/purge/{{image:path}}", purge, methods=["POST"]),
    ]
