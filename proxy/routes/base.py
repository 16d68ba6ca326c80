"""``/v2/`` version check, health and metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.routes.common import API_VERSION, services


async def version_check(request: Request) -> Response:
    return JSONResponse({}, headers=API_VERSION)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "offline": services(request).settings.cache.offline})


async def metrics(request: Request) -> Response:
    return Response(services(request).metrics.exposition(), media_type="text/plain; version=0.0.4")
