"""The registry API of the fake GAR apart from uploads: ping, manifests, blobs, listings.

``RegistryApiMixin`` serves and deletes manifests (checking pushed ones as GAR does:
schema version 2, a known media type, referenced blobs present, digest and tag syntax)
and blobs (a GET is sent on to a signed download, ``gar_downloads``), and lists tags
(with ``n``/``last`` paging) and referrers (with the ``artifactType`` filter).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from proxy.oci import mediatypes as mt
from testkit.fakes.gar_model import (
    _DIGEST,
    _TAG,
    MANIFEST_LIMIT,
    Buffer,
    _ApiError,
    _ImageRepo,
    _Manifest,
    _Route,
    _sha,
)
from testkit.fakes.gar_shapes import SCHEMA1, SCHEMA1_SIGNED, Schema1Digest, manifest_digest

# Starts every cursor with "+/" (base64 of these bits), and its length pads it with "=":
# the three characters a query's encoding and decoding get wrong.
_CURSOR_HEAD = b"\xfb\xff"


class RegistryApiMixin:
    """Manifest, blob, tag-list and referrers routes; part of ``FakeGAR``."""

    # Provided by FakeGAR.
    absolute_locations: bool
    chunk_size: int
    referrers_api: bool
    referrers_page_size: int | None
    referrers_link_host: str | None
    referrers_queries: list[str]
    _blobs: dict[str, Buffer]
    _lock: threading.RLock
    schema1_digest: Schema1Digest
    tag_list_limit: int
    _images: dict[tuple[str, str], _ImageRepo]
    _repo: Callable[..., _ImageRepo]
    _store_manifest: Callable[[str, str, str | None, bytes, str], str]
    blob_redirects: bool
    _redirect_download: Callable[[Request, _Route], Response]
    _blob_response: Callable[..., Response]

    # ------------------------------------------------------------ registry API

    async def _ping(self, request: Request, route: _Route) -> Response:
        return Response("{}", 200, media_type="application/json")

    def _url(self, request: Request, path: str) -> str:
        if self.absolute_locations:
            return f"{request.url.scheme}://{request.url.netloc}{path}"
        return path

    async def _manifest(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        if request.method == "PUT":
            return await self._put_manifest(request, route)
        image_repo = self._repo(route.location, route.name)
        with self._lock:
            digest = image_repo.tags.get(route.ref, route.ref)
            stored = image_repo.manifests.get(digest)
            if stored is not None and request.method == "DELETE":
                if route.ref == digest:
                    del image_repo.manifests[digest]
                    for tag in [t for t, d in image_repo.tags.items() if d == digest]:
                        del image_repo.tags[tag]
                else:
                    del image_repo.tags[route.ref]
        if stored is None:
            raise _ApiError(404, "MANIFEST_UNKNOWN", f"manifest {route.ref} not found")
        if request.method == "DELETE":
            return Response(status_code=202)
        if request.method not in ("GET", "HEAD"):
            raise _ApiError(405, "UNSUPPORTED", f"{request.method} on a manifest")
        headers = {
            "Docker-Content-Digest": digest,
            "Content-Type": stored.media_type,
            "Content-Length": str(len(stored.data)),
            "ETag": f'"{digest}"',
        }
        return Response(stored.data, 200, headers)

    async def _put_manifest(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MANIFEST_LIMIT:
                raise _ApiError(413, "SIZE_INVALID", "manifest too large")
        body = bytes(data)
        doc, media_type = self._validate_manifest(body, request.headers.get("content-type", ""))
        if ":" in route.ref and not _DIGEST.fullmatch(route.ref):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {route.ref!r}")
        if media_type in mt.SCHEMA1_TYPES:
            digest = manifest_digest(body, media_type, self.schema1_digest)
        else:
            digest = _sha(body, route.ref.split(":")[0] if ":" in route.ref else "sha256")
        if ":" in route.ref and route.ref != digest:
            raise _ApiError(400, "DIGEST_INVALID", "manifest digest does not match reference")
        if ":" not in route.ref and not _TAG.fullmatch(route.ref):
            raise _ApiError(400, "TAG_INVALID", f"invalid tag {route.ref!r}")
        image_repo = self._repo(route.location, route.name, create=True)  # A9
        with self._lock:
            missing = [
                d
                for d in self._references(doc)
                if d not in image_repo.blobs and d not in image_repo.manifests
            ]
        if missing:
            raise _ApiError(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown to registry: {missing[0]}")
        digest = self._store_manifest(route.location, route.name, route.ref, body, media_type)
        headers = {
            "Location": self._url(request, f"/{route.location}/v2/{route.name}/manifests/{digest}"),
            "Docker-Content-Digest": digest,
        }
        if isinstance(doc.get("subject"), dict):
            headers["OCI-Subject"] = str(doc["subject"].get("digest"))
        return Response(status_code=201, headers=headers)

    @staticmethod
    def _validate_manifest(body: bytes, content_type: str) -> tuple[dict[str, Any], str]:
        """The manifest and its media type; schema 1 (signed or not) is accepted as GAR's
        supported formats say (N1), schema 2 and OCI with their usual checks."""
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _ApiError(400, "MANIFEST_INVALID", "manifest is not JSON") from None
        declared = content_type.split(";")[0].strip()
        if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
            return doc, _schema1_type(doc)
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            raise _ApiError(400, "MANIFEST_INVALID", "manifest must be schemaVersion 1 or 2 JSON")
        media_type = doc.get("mediaType") or declared
        if media_type not in mt.INDEX_TYPES | mt.IMAGE_TYPES:
            raise _ApiError(400, "MANIFEST_INVALID", f"unsupported media type {media_type!r}")
        if doc.get("mediaType") and declared in mt.MANIFEST_TYPES and declared != media_type:
            raise _ApiError(400, "MANIFEST_INVALID", "Content-Type does not match mediaType")
        if media_type in mt.INDEX_TYPES and not isinstance(doc.get("manifests"), list):
            raise _ApiError(400, "MANIFEST_INVALID", "index lacks manifests")
        if media_type in mt.IMAGE_TYPES and not isinstance(doc.get("config"), dict):
            raise _ApiError(400, "MANIFEST_INVALID", "image manifest lacks config")
        return doc, media_type

    @staticmethod
    def _references(doc: dict[str, Any]) -> list[str]:
        try:
            if doc.get("schemaVersion") == 1:  # N1: its layers are fsLayers' blobSums
                return [str(layer["blobSum"]) for layer in doc.get("fsLayers", [])]
            descriptors = [doc["config"], *doc.get("layers", [])] if "config" in doc else []
            descriptors += doc.get("manifests", [])
            return [str(d["digest"]) for d in descriptors if not d.get("urls")]
        except (KeyError, TypeError, AttributeError):
            raise _ApiError(400, "MANIFEST_INVALID", "malformed descriptor") from None

    def _blob_data(self, route: _Route, digest: str) -> Buffer:
        assert route.location is not None
        if not _DIGEST.fullmatch(digest):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
        image_repo = self._repo(route.location, route.name)
        with self._lock:
            if digest in image_repo.blobs:
                return self._blobs[digest]
        raise _ApiError(404, "BLOB_UNKNOWN", f"blob {digest} not found")

    async def _blob(self, request: Request, route: _Route) -> Response:
        """GET: 302 to a signed download on the same host, as GAR answers
        (``gar_downloads``), or the bytes with ``blob_redirects=False``; HEAD: the
        headers, directly."""
        data = self._blob_data(route, route.ref)
        if request.method == "DELETE":
            with self._lock:
                self._repo(route.location or "", route.name).blobs.discard(route.ref)
            return Response(status_code=202)
        if request.method not in ("GET", "HEAD"):
            raise _ApiError(405, "UNSUPPORTED", f"{request.method} on a blob")
        if request.method == "GET" and self.blob_redirects:
            return self._redirect_download(request, route)
        return self._blob_response(request, route.ref, data)

    # ------------------------------------------------------------ listings

    async def _tags(self, request: Request, route: _Route) -> Response:
        """GAR's tag list is GCR-shaped (N3): ``child`` (nested image names), ``manifest``
        (digest -> imageSizeBytes, layerId, mediaType, tag, timeCreatedMs,
        timeUploadedMs), ``name`` and ``tags``; and it holds at most ``tag_list_limit``
        tags (N4: "incomplete" past 10,000; which ones are left out is unknown, here the
        last in sort order)."""
        assert route.location is not None
        image_repo = self._repo(route.location, route.name)
        with self._lock:
            if not image_repo.tags and not image_repo.manifests:
                raise _ApiError(404, "NAME_UNKNOWN", f"repository {route.name} not found")
            names = sorted(image_repo.tags)[: self.tag_list_limit]
            kept = set(names)
            manifests = {
                digest: _listed(
                    stored, [t for t, d in image_repo.tags.items() if d == digest and t in kept]
                )
                for digest, stored in sorted(image_repo.manifests.items())[: self.tag_list_limit]
            }
            children = sorted(
                {
                    name[len(route.name) + 1 :].split("/")[0]
                    for (loc, name) in self._images
                    if loc == route.location and name.startswith(route.name + "/")
                }
            )
        last = request.query_params.get("last")
        if last:
            names = [t for t in names if t > last]
        headers: dict[str, str] = {}
        n = request.query_params.get("n")
        # int() refuses over 4,300 digits; no repository has 10**9 tags.
        if n is not None and n.isdigit() and len(n) < 10 and int(n) < len(names):
            names = names[: int(n)]
            if names:
                link = f"/{route.location}/v2/{route.name}/tags/list?n={n}&last={names[-1]}"
                headers["Link"] = f'<{link}>; rel="next"'
        if n is not None or last:  # a page lists its own tags' manifests (GAR's: unknown)
            manifests = _page_of(manifests, set(names))
        body = {"child": children, "manifest": manifests, "name": route.name, "tags": names}
        return Response(json.dumps(body), 200, headers, media_type="application/json")

    async def _referrers(self, request: Request, route: _Route) -> Response:
        assert route.location is not None
        if not self.referrers_api:
            raise _ApiError(404, "UNSUPPORTED", "referrers API not supported")
        if not _DIGEST.fullmatch(route.ref):
            raise _ApiError(400, "DIGEST_INVALID", f"invalid digest {route.ref!r}")
        image_repo = self._repo(route.location, route.name)
        wanted = request.query_params.get("artifactType")
        with self._lock:
            found = sorted(
                (d, m) for d, m in image_repo.manifests.items() if m.subject == route.ref
            )
        descriptors = []
        for digest, stored in found:
            if wanted and stored.artifact_type != wanted:
                continue
            descriptor: dict[str, Any] = {
                "mediaType": stored.media_type,
                "digest": digest,
                "size": len(stored.data),
            }
            if stored.artifact_type:
                descriptor["artifactType"] = stored.artifact_type
            if stored.annotations:
                descriptor["annotations"] = stored.annotations
            descriptors.append(descriptor)
        headers = {"OCI-Filters-Applied": "artifactType"} if wanted else {}
        self.referrers_queries.append(request.url.query)
        if self.referrers_page_size is not None:
            descriptors, link = self._referrers_page(request, route, descriptors)
            if link:
                headers["Link"] = link
        body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors})
        return Response(body, 200, headers, media_type=mt.OCI_INDEX)

    def _referrers_page(
        self, request: Request, route: _Route, descriptors: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page after the ``cursor`` (opaque: base64 of the last digest served,
        with ``+``, ``/`` and ``=`` to survive percent-encoding), and the ``Link`` to
        the next, carrying the filter as the spec's example does (N8)."""
        assert self.referrers_page_size is not None
        after = request.query_params.get("cursor")
        if after is not None:
            last = base64.b64decode(after)[len(_CURSOR_HEAD) :].decode()
            descriptors = [d for d in descriptors if d["digest"] > last]
        size = self.referrers_page_size
        page, rest = descriptors[:size], descriptors[size:]
        if not rest:
            return page, None
        opaque = base64.b64encode(_CURSOR_HEAD + page[-1]["digest"].encode()).decode()
        query = {"cursor": opaque}
        wanted = request.query_params.get("artifactType")
        if wanted:
            query = {"artifactType": wanted, **query}
        path = f"/{route.location}/v2/{route.name}/referrers/{route.ref}?{urlencode(query)}"
        if self.referrers_link_host:
            return page, f'<{request.url.scheme}://{self.referrers_link_host}{path}>; rel="next"'
        return page, f'<{self._url(request, path)}>; rel="next"'


def _schema1_type(doc: dict[str, Any]) -> str:
    """A schema-1 manifest's media type: signed when it carries signatures (N1)."""
    if not isinstance(doc.get("fsLayers"), list):
        raise _ApiError(400, "MANIFEST_INVALID", "schema 1 manifest lacks fsLayers")
    # Whether GAR checks the declared type against the signatures is unknown: not here.
    return SCHEMA1_SIGNED if doc.get("signatures") else SCHEMA1


def _listed(stored: _Manifest, tags: list[str]) -> dict[str, Any]:
    """One ``manifest`` entry of the GCR-shaped tag list (N3): sizes and creation time as
    strings, the upload time as a number (as go-containerregistry reads them)."""
    return {
        "imageSizeBytes": str(stored.size or len(stored.data)),
        "layerId": "",
        "mediaType": stored.media_type,
        "tag": sorted(tags),
        "timeCreatedMs": str(stored.uploaded_ms),
        "timeUploadedMs": stored.uploaded_ms,
    }


def _page_of(manifests: dict[str, dict[str, Any]], tags: set[str]) -> dict[str, dict[str, Any]]:
    paged = {}
    for digest, entry in manifests.items():
        on_page = [t for t in entry["tag"] if t in tags]
        if on_page:
            paged[digest] = {**entry, "tag": on_page}
    return paged
