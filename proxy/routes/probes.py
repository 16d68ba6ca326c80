"""What machines poll: the ``/v2/`` ping clients send before anything else, liveness
(``/healthz``), readiness (``/readyz``) and the Prometheus scrape (``/metrics``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.redact import redact, redact_value
from proxy.routes.admin import admin_allowed
from proxy.routes.common import API_VERSION, services
from proxy.services.health import Health


async def version_check(request: Request) -> Response:
    return JSONResponse({}, headers=API_VERSION)


async def health(request: Request) -> Response:
    """Alive: the event loop answers. Readiness is ``/readyz``."""
    return JSONResponse({"status": "ok", "offline": services(request).settings.cache.offline})


async def ready(request: Request) -> Response:
    """200 when the proxy can serve, else 503, for any prober. The detail (each check,
    the upstream's URL and state, the credential source) goes to admin identities and
    loopback clients when client auth is on; without client auth, to anyone."""
    health: Health = request.app.state.health
    is_ready, detail = await health.readiness()
    if services(request).settings.access.enabled and not admin_allowed(request):
        detail = {"ready": is_ready, "detail": "shown to admin identities and loopback only"}
    return JSONResponse(
        redact_value(detail), 200 if is_ready else 503, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: Request) -> Response:
    text = redact(services(request).metrics.exposition().decode())
    return Response(text, media_type="text/plain; version=0.0.4")
