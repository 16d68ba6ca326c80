"""Write API: blob uploads (start, chunks, progress, finish, cancel), mounts, manifests.

Bodies are never read whole here: blob chunks go on to the services as the request
stream, manifests are read up to the 4 MiB limit and refused (413) past it, before
the rest is read when ``Content-Length`` already says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.manifest import MANIFEST_READ_LIMIT
from proxy.oci.names import parse_reference
from proxy.routes.common import API_VERSION, parameters, repository, requested_mount, services
from proxy.services.container import Services
from proxy.services.upload_session import Chunk, Session

SESSION_METHODS = ["GET", "PATCH", "PUT", "DELETE"]


def _writable(request: Request) -> Services:
    found = services(request)
    if found.settings.cache.offline:
        raise RegistryError(ErrorCode.UNSUPPORTED, "gar-proxy is offline: pushes need upstream")
    return found


def _content_length(request: Request) -> int | None:
    header = request.headers.get("content-length")
    if header is None:
        return None
    if not header.strip().isdigit():
        raise RegistryError(ErrorCode.SIZE_INVALID, f"bad Content-Length {header[:40]!r}")
    return int(header)


async def _body(request: Request, length: int | None) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away mid-body (the stream
    ends, or says so, short of its Content-Length) is a registry answer of its own
    (nobody will read it), not an internal error and never a shorter chunk."""
    received = 0
    try:
        async for part in request.stream():
            received += len(part)
            yield part
    except ClientDisconnect:
        received = -1
    if received == -1 or (length is not None and received < length):
        raise RegistryError(ErrorCode.CLIENT_GONE, "the client left mid-body")


def _chunk(request: Request) -> Chunk:
    length = _content_length(request)
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    body = _body(request, length) if (length or chunked) else None
    return Chunk(body, length, request.headers.get("content-range"))


def _created(name: str, digest: Digest) -> Response:
    headers = {
        "Location": f"/v2/{name}/blobs/{digest}",
        "Docker-Content-Digest": str(digest),
        **API_VERSION,
    }
    return Response(status_code=201, headers=headers)


def _session_answer(request: Request, session: Session, status: int) -> Response:
    headers = session.headers(request.path_params["name"])
    return Response(status_code=status, headers={**headers, **API_VERSION})


async def start_upload(request: Request) -> Response:
    """POST: a session (202), a monolithic upload (``?digest=``) or a mount (201)."""
    found = _writable(request)
    name = request.path_params["name"]
    query = parameters(request)
    # Digests are checked before the location is resolved, which may ask GAR's API.
    mount = await requested_mount(request)  # None: no mount, or not one the caller may have
    if mount is not None:
        repo = await repository(request)
        session = await found.mounts.mount(repo, mount.digest, mount.source)
        if session is None:
            return _created(name, mount.digest)
        return _session_answer(request, session, 202)
    whole = Digest.parse(query.digest) if query.digest is not None else None
    repo = await repository(request)
    if whole is not None:
        await found.uploads.monolithic(repo, whole, _chunk(request))
        return _created(name, whole)
    session = await found.uploads.start(repo)
    return _session_answer(request, session, 202)


async def upload(request: Request) -> Response:
    """GET (progress), PATCH (a chunk), PUT (finish), DELETE (cancel) on a session."""
    found = _writable(request)
    repo = await repository(request)
    uploads = found.uploads
    session = await uploads.session(repo, request.path_params["upload_id"])
    if request.method in ("GET", "HEAD"):
        await uploads.progress(session)
        return _session_answer(request, session, 204)
    if request.method == "PATCH":
        await uploads.append(session, _chunk(request))
        return _session_answer(request, session, 202)
    if request.method == "PUT":
        digest = Digest.parse(parameters(request).digest or "")
        await uploads.finish(session, digest, _chunk(request))
        return _created(request.path_params["name"], digest)
    await uploads.cancel(session)
    return Response(status_code=204, headers=API_VERSION)


async def _manifest_body(request: Request) -> bytes:
    too_big = RegistryError(
        ErrorCode.TOO_LARGE, f"manifest over the limit of {MANIFEST_READ_LIMIT} bytes"
    )
    length = _content_length(request)
    if length is not None and length > MANIFEST_READ_LIMIT:
        raise too_big  # before reading a byte of it
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > MANIFEST_READ_LIMIT:
            raise too_big
        parts.append(part)
    return b"".join(parts)


async def manifest(request: Request) -> Response:
    """PUT a manifest (201) or DELETE one (202, when allowed)."""
    found = _writable(request)
    reference = parse_reference(request.path_params["reference"])
    repo = await repository(request)
    if request.method == "DELETE":
        await found.manifest_writes.delete(repo, reference)
        return Response(status_code=202, headers=API_VERSION)
    body = await _manifest_body(request)
    pushed = await found.manifest_writes.put(
        repo, reference, request.headers.get("content-type"), body
    )
    headers = {
        "Location": f"/v2/{request.path_params['name']}/manifests/{pushed.digest}",
        "Docker-Content-Digest": str(pushed.digest),
        **API_VERSION,
    }
    if pushed.subject:
        headers["OCI-Subject"] = pushed.subject
    return Response(status_code=201, headers=headers)
