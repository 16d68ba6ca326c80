"""Helpers every route uses: the services, name parsing, digest headers, bodies."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response

from proxy.cache.bodies import FileBody
from proxy.http.responses import CutResponse, FileBodyResponse
from proxy.oci.names import Repository
from proxy.services.answers import Answer
from proxy.services.container import Services
from proxy.services.mirrors import resolve_name

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def repository(request: Request) -> Repository:
    """The path's repository, location resolved; NAME_INVALID before any I/O."""
    return await resolve(request, request.path_params["name"])


async def resolve(request: Request, name: str) -> Repository:
    """Any name the client gave (the path's, a mount's ``from``): mirrors, then location."""
    found = services(request)
    local = request.scope.get("server")
    # Most requests have no query: not parsing an empty one is a measurable saving.
    ns = request.query_params.get("ns") if request.scope["query_string"] else None
    write = request.method not in ("GET", "HEAD")
    return await resolve_name(found.mirrors, found.locations, name, ns=ns, local=local, write=write)


async def _counted(
    body: AsyncIterable[bytes], on_sent: Callable[[int], None]
) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in body:
            sent += len(chunk)
            yield chunk
    finally:
        on_sent(sent)


def answer_response(request: Request, answer: Answer, *, source: str) -> Response:
    headers = {
        "Docker-Content-Digest": str(answer.digest),
        "ETag": f'"{answer.digest}"',
        **API_VERSION,
        **answer.headers,
    }
    status = 200
    length = answer.size
    if answer.span is not None and answer.size is not None:
        start, end = answer.span
        status, length = 206, end - start
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{answer.size}"
    if length is not None:
        headers["Content-Length"] = str(length)
    if isinstance(answer.body, bytes):
        return Response(answer.body, status, headers, media_type=answer.media_type)
    if answer.body is None:  # HEAD: headers only, the body is not even opened
        response = Response(b"", status, headers, media_type=answer.media_type)
        if length is not None:
            response.headers["Content-Length"] = str(length)
        return response
    counter = services(request).metrics.bytes_served.labels(source)
    if isinstance(answer.body, FileBody):
        return FileBodyResponse(answer.body, status, headers, answer.media_type, counter.inc)
    body = _counted(answer.body, counter.inc)
    return CutResponse(body, status, headers, media_type=answer.media_type)
