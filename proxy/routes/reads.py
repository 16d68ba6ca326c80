"""Read API: manifests, blobs, tag lists, referrers (OCI distribution spec 1.1)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from proxy.auth.access import listing_filter
from proxy.oci.digest import Digest
from proxy.oci.mediatypes import parse_accept
from proxy.oci.names import parse_reference
from proxy.routes.common import API_VERSION, answer_response, parameters, repository, services
from proxy.services.catalog import catalog as catalog_page


async def manifest(request: Request) -> Response:
    # Checked before the location is resolved, which may ask GAR's metadata API.
    reference = parse_reference(request.path_params["reference"])
    repo = await repository(request)
    accept = parse_accept(request.headers.getlist("accept"))
    head = request.method == "HEAD"
    answer = await services(request).manifests.get(repo, reference, accept, head=head)
    return answer_response(request, answer, source="manifest")


def _range(request: Request, digest: Digest) -> str | None:
    """The Range to serve: none when ``If-Range`` names another representation (RFC
    9110 section 13.1.5: a different entity tag, or a date, since a blob has no
    Last-Modified to compare it with), so the client gets the whole blob, 200."""
    wanted = request.headers.get("range")
    condition = request.headers.get("if-range")
    if wanted is None or condition is None:
        return wanted
    return wanted if condition.strip() == f'"{digest}"' else None


async def blob(request: Request) -> Response:
    digest = Digest.parse(request.path_params["digest"])
    repo = await repository(request)
    blobs = services(request).blobs
    if request.method == "HEAD":
        answer = await blobs.head(repo, digest)
    else:
        answer = await blobs.get(repo, digest, _range(request, digest))
    response = answer_response(request, answer, source="blob")
    response.headers["Accept-Ranges"] = "bytes"
    return response


async def tags(request: Request) -> Response:
    repo = await repository(request)
    query = parameters(request)
    listing = await services(request).listings.tags(
        repo,
        query.n,
        query.last,
        client_name=request.path_params["name"],
        keep=query.repository_choice,
    )
    return Response(listing.body, 200, {**listing.headers, **API_VERSION}, listing.media_type)


async def referrers(request: Request) -> Response:
    """Upstream's query (its cursor) is passed on: every parameter is read, once."""
    digest = Digest.parse(request.path_params["digest"])
    query = parameters(request)
    passed_on = query.passed_on()
    repo = await repository(request)
    listing = await services(request).listings.referrers(
        repo,
        digest,
        passed_on,
        client_name=request.path_params["name"],
        keep=query.repository_choice,
    )
    return Response(listing.body, 200, {**listing.headers, **API_VERSION}, listing.media_type)


async def catalog(request: Request) -> Response:
    """The repositories cached, those the caller may pull (an admin: all)."""
    query = parameters(request)
    visible = listing_filter(request.scope)
    page = await catalog_page(services(request).index, query.n, query.last, visible=visible)
    return Response(page.body, 200, {**page.headers, **API_VERSION}, "application/json")
