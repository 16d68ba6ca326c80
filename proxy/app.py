"""``create_app(settings)``: the Starlette app; its lifespan owns every service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy import requestcontext
from proxy.auth.middleware import AccessControl, AccessPolicy
from proxy.clock import SYSTEM, Clock
from proxy.config import Settings
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.routes import admin, admin_tags, probes, reads, status, writes
from proxy.routes.observe import RequestMetrics
from proxy.services.container import open_services
from proxy.services.health import Health
from proxy.services.scheduled_warm import scheduled_warming

log = logging.getLogger("gar_proxy")

NAME = "/v2/{name:path}"


def routes() -> list[Route]:
    return [
        Route("/v2/", probes.version_check, methods=["GET", "HEAD"]),
        Route("/v2/_catalog", reads.catalog, methods=["GET"]),
        Route(f"{NAME}/manifests/{{reference}}", reads.manifest, methods=["GET", "HEAD"]),
        Route(f"{NAME}/manifests/{{reference}}", writes.manifest, methods=["PUT", "DELETE"]),
        Route(f"{NAME}/blobs/uploads/", writes.start_upload, methods=["POST"]),
        # The spec's path ends in a slash; some clients leave it off, and registries take both.
        Route(f"{NAME}/blobs/uploads", writes.start_upload, methods=["POST"]),
        Route(f"{NAME}/blobs/uploads/{{upload_id}}", writes.upload, methods=writes.SESSION_METHODS),
        Route(f"{NAME}/blobs/{{digest}}", reads.blob, methods=["GET", "HEAD"]),
        Route(f"{NAME}/tags/list", reads.tags, methods=["GET"]),
        Route(f"{NAME}/referrers/{{digest}}", reads.referrers, methods=["GET"]),
        Route("/healthz", probes.health, methods=["GET"]),
        Route("/readyz", probes.ready, methods=["GET"]),
        Route("/", status.page, methods=["GET"]),
        Route("/metrics", probes.metrics, methods=["GET"]),
        *admin.routes(),
        *admin_tags.routes(),
    ]


async def error_response(request: Request, exc: Exception) -> Response:
    """The one writer of the OCI error envelope (nothing for a HEAD)."""
    assert isinstance(exc, RegistryError)
    requestcontext.note_error(exc.code.wire, exc.message)  # for the request's log line
    if exc.code is ErrorCode.CLIENT_GONE:
        log.info("client left during %s %s: %s", request.method, request.url.path, exc.message)
    headers = {"Docker-Distribution-API-Version": "registry/2.0", **exc.headers}
    if request.method == "HEAD":
        return Response(status_code=exc.status, headers=headers)
    return JSONResponse(exc.envelope(), exc.status, headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    request_id = requestcontext.request_id() or requestcontext.new_request_id()
    log.error(
        "request %s %s failed (id %s)", request.method, request.url.path, request_id, exc_info=exc
    )
    error = RegistryError(ErrorCode.UNKNOWN, f"internal error (request id {request_id})")
    requestcontext.note_error(error.code.wire, f"{type(exc).__name__} (traceback logged)")
    return JSONResponse(error.envelope(), 500)


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client went away (or was timed out, ``server.body_timeout``) while its body
    was read: an answer nobody reads, one line, no traceback."""
    return await error_response(request, RegistryError(ErrorCode.CLIENT_GONE, "mid-body"))


async def not_found(request: Request, exc: Exception) -> Response:
    error = RegistryError(
        ErrorCode.ROUTE_UNKNOWN,
        f"{request.method} {request.url.path} is not part of the registry API",
    )
    return await error_response(request, error)


async def not_allowed(request: Request, exc: Exception) -> Response:
    error = RegistryError(ErrorCode.UNSUPPORTED, f"{request.method} is not supported here")
    return await error_response(request, error)


def create_app(settings: Settings, clock: Clock = SYSTEM) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            open_services(settings, clock) as services,
            scheduled_warming(services, clock),
        ):
            app.state.services = services
            app.state.health = health = Health(services, clock)
            # In the background: a slow upstream or metadata server never delays serving.
            report = asyncio.create_task(health.watch(), name="health checks")
            try:
                yield
            finally:
                report.cancel()
                await services.cache.fills.drain(settings.server.shutdown_grace)

    policy = AccessPolicy(settings.access, clock)  # a bad file stops start-up here
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(RequestMetrics),
            Middleware(AccessControl, policy=policy),
        ],
        lifespan=lifespan,
        exception_handlers={
            RegistryError: error_response,
            ClientDisconnect: client_gone,
            Exception: unexpected_error,
            404: not_found,
            405: not_allowed,
        },
    )
    app.state.access = policy
    return app
