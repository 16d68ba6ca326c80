"""Write API: blob uploads (start, chunks, progress, finish, cancel), mounts, manifests.

Bodies are never read whole here: blob chunks go on to the services as the request
stream, manifests are read up to the 4 MiB limit and refused (413) past it, before
the rest is read when ``Content-Length`` already says so. The services answer in typed
values (``UploadState``); the headers a client reads (``Location``, ``Range``,
``Docker-Upload-UUID``, ``OCI-Chunk-Min-Length``) are made here, also on a refusal that
leaves the session going (a 416 says where the upload stands).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from proxy.auth.access import judged_by, pull_filter
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.manifest import MANIFEST_READ_LIMIT
from proxy.oci.names import parse_reference
from proxy.routes.common import API_VERSION, parameters, repository, requested_mount, services
from proxy.services.container import Services
from proxy.services.upload_session import Chunk, UploadState

SESSION_METHODS = ["GET", "PATCH", "PUT", "DELETE"]
# At most 19 digits (no upload reaches 10**19 bytes): a longer number is out of range
# before int() sees it, which refuses more than 4,300 digits with ValueError.
CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?")


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


def _span(request: Request) -> tuple[int, int] | None:
    """``Content-Range: first-last`` as numbers (the OCI form; ``bytes`` and a total
    are tolerated), checked against the session's offset by the service."""
    text = request.headers.get("content-range")
    if text is None:
        return None
    match = CONTENT_RANGE.fullmatch(text.strip())
    if match is None:
        raise RegistryError(ErrorCode.RANGE_INVALID, f"bad Content-Range {text[:60]!r}")
    return int(match[1]), int(match[2])


def _chunk(request: Request) -> Chunk:
    length = _content_length(request)
    span = _span(request)
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    body = _body(request, length) if (length or chunked) else None
    return Chunk(body, length, span)


def _created(name: str, digest: Digest) -> Response:
    headers = {
        "Location": f"/v2/{name}/blobs/{digest}",
        "Docker-Content-Digest": str(digest),
        **API_VERSION,
    }
    return Response(status_code=201, headers=headers)


def _session_headers(name: str, state: UploadState) -> dict[str, str]:
    """Where the client's session is (on the proxy), the bytes it holds, its id."""
    headers = {
        "Location": f"/v2/{name}/blobs/uploads/{state.id}",
        # Registries write "0-0" for an empty upload too; clients expect this form.
        "Range": f"0-{max(state.offset - 1, 0)}",
        "Docker-Upload-UUID": state.id,
    }
    if state.chunk_min_length is not None:
        headers["OCI-Chunk-Min-Length"] = str(state.chunk_min_length)
    return headers


def _owner(request: Request) -> str:
    """Whose upload session a request opens or may touch: its identity (``anonymous``
    without client auth)."""
    return judged_by(request.scope)[1]


def _session_answer(request: Request, state: UploadState, status: int) -> Response:
    headers = _session_headers(request.path_params["name"], state)
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
        state = await found.mounts.mount(repo, mount.digest, mount.source, owner=_owner(request))
        if state is None:
            return _created(name, mount.digest)
        return _session_answer(request, state, 202)
    whole = Digest.parse(query.digest) if query.digest is not None else None
    repo = await repository(request)
    if whole is not None:
        await found.uploads.monolithic(repo, whole, _chunk(request), owner=_owner(request))
        return _created(name, whole)
    session = await found.uploads.start(repo, owner=_owner(request))
    return _session_answer(request, session.state(), 202)


async def upload(request: Request) -> Response:
    """GET (progress), PATCH (a chunk), PUT (finish), DELETE (cancel) on a session."""
    found = _writable(request)
    repo = await repository(request)
    uploads = found.uploads
    session = await uploads.session(repo, request.path_params["upload_id"], owner=_owner(request))
    try:
        if request.method in ("GET", "HEAD"):
            return _session_answer(request, await uploads.progress(session), 204)
        if request.method == "PATCH":
            return _session_answer(request, await uploads.append(session, _chunk(request)), 202)
        if request.method == "PUT":
            digest = Digest.parse(parameters(request).digest or "")
            await uploads.finish(session, digest, _chunk(request))
            return _created(request.path_params["name"], digest)
        await uploads.cancel(session)
        return Response(status_code=204, headers=API_VERSION)
    except RegistryError as error:
        state = uploads.state_of(session)  # still going: say where it stands
        if state is not None and error.code is not ErrorCode.BLOB_UPLOAD_UNKNOWN:
            error.headers.update(_session_headers(request.path_params["name"], state))
        raise


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
        repo, reference, request.headers.get("content-type"), body, pull_filter(request.scope)
    )
    headers = {
        "Location": f"/v2/{request.path_params['name']}/manifests/{pushed.digest}",
        "Docker-Content-Digest": str(pushed.digest),
        **API_VERSION,
    }
    if pushed.subject:
        headers["OCI-Subject"] = pushed.subject
    return Response(status_code=201, headers=headers)
