"""Helpers every route uses: the services, the query's parameters, names and the access
decision on them, digest headers, bodies.

A route gets the repository it works on only from ``repository`` (the path's) or
``requested_mount`` (a mount's ``from``): each turns the client's name into the
repository as GAR knows it and asks ``proxy.auth.access`` whether the caller may act on
it, before any lookup; there is no other way from a client's text to a ``Repository``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy import requestcontext
from proxy.auth.access import PULL, PUSH, authorize, denied, judged_by, permitted
from proxy.cache.bodies import FileBody
from proxy.http.query import Parameters
from proxy.http.responses import CutResponse, FileBodyResponse
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from proxy.oci.names import Repository
from proxy.services.answers import Answer
from proxy.services.container import Services
from proxy.services.mirrors import locate, upstream_name

log = logging.getLogger("gar_proxy.access")
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
# Keys of the request's state: what was parsed and resolved once for it.
_PARAMETERS = "parameters"
_REPOSITORY = "repository"


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def parameters(request: Request) -> Parameters:
    """The query parameters the proxy acts on, parsed once for the whole request (the
    access check and the route read this one value; a repeated one is a 400)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    found = state.get(_PARAMETERS)
    if found is None:
        found = state[_PARAMETERS] = Parameters.parse(request.scope["query_string"])
    assert isinstance(found, Parameters)
    return found


def action(request: Request) -> str:
    """What the request does to its path's repository: GET and HEAD read it, except on
    an upload session (even its status is a pusher's business); the rest write it."""
    reads = request.method in ("GET", "HEAD") and "upload_id" not in request.path_params
    return PULL if reads else PUSH


def named(request: Request, name: str) -> Repository:
    """Any name the client gave (the path's, a mount's ``from``) as GAR knows it:
    mirrors (``?ns=``, the listener, a host in the name), the default project. No I/O."""
    found = services(request)
    ns = parameters(request).namespace
    local = request.scope.get("server")
    return upstream_name(found.mirrors, found.locations, name, ns=ns, local=local)


async def repository(request: Request) -> Repository:
    """The path's repository as GAR knows it, once the caller may act on it (``action``),
    then located. NAME_INVALID and the access decision come before any I/O, so neither
    a lookup nor an answer tells a caller anything about a repository it may not use."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    found = state.get(_REPOSITORY)
    if found is None:
        name = request.path_params["name"]
        doing = action(request)
        repo = named(request, name)
        authorize(request.scope, doing, repo.path, name)
        _note_repository(repo)
        found = state[_REPOSITORY] = await _locate(request, repo, write=doing == PUSH)
    assert isinstance(found, Repository)
    return found


@dataclass(frozen=True)
class Mount:
    digest: Digest
    source: Repository | None  # None: ``from`` was not given


async def requested_mount(request: Request) -> Mount | None:
    """The cross-repository mount a POST asks for (``?mount=&from=``), when the caller
    may have it: push on the path's repository (``repository``) and pull on ``from``.
    None: no mount was asked, or the caller may not read ``from``; either way the
    request is a plain upload (202), as a registry without access to ``from`` answers,
    so clients (containerd stops on anything but 401) go on with the upload and a
    refusal says nothing about ``from``. A mount without ``from`` may be answered from
    any repository, so it needs pull on everything. A ``from`` that names nothing
    (invalid, an unmirrored registry) or cannot be located now is no mount either:
    a mount is a hint, never a reason for a push to fail."""
    query = parameters(request)
    if query.mount is None:
        return None
    digest = Digest.parse(query.mount)
    await repository(request)  # push on the target first, or DENIED
    if not query.source:
        if _may_read_anything(request):
            return Mount(digest, None)
        _no_mount(request, "may not mount without from (it needs pull on everything)", None)
        return None
    try:
        source = named(request, query.source)
    except RegistryError as error:  # a hint that names nothing: no mount, not a failure
        log.debug("mount from %r dropped: %s", query.source[:300], error.message)
        return None
    if not permitted(request.scope, PULL, source.path):
        _no_mount(request, f"may not pull {source.path}: mount dropped", source.path)
        return None
    try:
        return Mount(digest, await _locate(request, source, write=False))
    except RegistryError as error:
        log.info("mount from %s dropped: %s", source.path, error.message)
        return None


def _may_read_anything(request: Request) -> bool:
    access, identity = judged_by(request.scope)
    return access.rules.allows_everything(identity, PULL)


def _no_mount(request: Request, reason: str, source: str | None) -> None:
    identity = request.scope.get("state", {}).get("identity")
    denied(request.scope, identity, reason, repository=source)


async def _locate(request: Request, repo: Repository, *, write: bool) -> Repository:
    found = services(request)
    return await locate(found.mirrors, found.locations, repo, write=write)


def _note_repository(repo: Repository) -> None:
    """For the status page's top repositories: one entry per repository, however spelt."""
    context = requestcontext.current.get()
    if context is not None:
        context.repository = repo.path


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
