"""``POST /_gar-proxy/refresh/IMAGE[:TAG]`` and ``POST /_gar-proxy/purge/IMAGE[:TAG|@DIGEST]
[?blobs=true]``: what ``gar-proxy refresh|purge --json`` print, done by this proxy (its
memory, its running fills and readers), for admins only (without client auth: loopback
clients) and, with rules in force, only on what they may pull: the same guard as the
other admin paths (``proxy.routes.admin.guard``), met on the repository as refresh and
purge resolve it (a mirrored registry's name included: ``upstream_name``, the one
resolution both use), so what is judged is what is acted on.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from proxy.oci.errors import ErrorCode, RegistryError
from proxy.routes.admin import PREFIX, guard
from proxy.routes.common import parameters, services
from proxy.services import maintenance
from proxy.services.mirrors import upstream_name

_YES, _NO = ("1", "true", "yes"), ("", "0", "false", "no")


def _image(request: Request) -> str:
    """The path's image, after the admin and pull check on its repository as GAR knows it."""
    text: str = request.path_params["image"]
    name, _, _ = maintenance.split(text)
    found = services(request)
    guard(request, upstream_name(found.mirrors, found.locations, name, ns=None).path, text)
    return text


def _json(data: dict[str, object]) -> JSONResponse:
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def _blobs(request: Request) -> bool:
    raw = (parameters(request).blobs or "").lower()
    if raw not in _YES + _NO:
        raise RegistryError(ErrorCode.QUERY_INVALID, "blobs must be true or false")
    return raw in _YES


async def refresh(request: Request) -> JSONResponse:
    image = _image(request)
    return _json(await maintenance.refresh(services(request), image))


async def purge(request: Request) -> JSONResponse:
    image = _image(request)
    blobs = _blobs(request)
    return _json(await maintenance.purge(services(request), image, blobs=blobs))


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}/refresh/{{image:path}}", refresh, methods=["POST"]),
        Route(f"{PREFIX}/purge/{{image:path}}", purge, methods=["POST"]),
    ]
