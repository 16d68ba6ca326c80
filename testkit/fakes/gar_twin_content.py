"""The GAR twin's content: manifests, blobs (and their redirects), tag lists.

Evidence (docs/GAR.md D1, D4, N3): a blob GET answers a redirect to
``/artifacts-downloads/namespaces/P/repositories/R/downloads/<signature>`` on the same
host (serverless-registry-proxy#8); the tag list is GCR-shaped (go-containerregistry
``pkg/v1/google/list.go``). Open: the redirect's status and form, whether a HEAD
redirects, Range, the headers of manifest answers, chunked or gzip'd bodies, the Link
header's form: each a knob.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from testkit.fakes.gar_twin_auth import TwinBase
from testkit.fakes.gar_twin_wire import (
    Headers,
    digest_of,
    json_answer,
    maybe_gzip,
    oci_error,
    repository_of,
    respond,
)

JSON = [("content-type", "application/json")]
MANIFEST_LIMIT = 4 << 20


class ContentMixin(TwinBase):
    # ------------------------------------------------------------------ seeding

    def put_blob(self, name: str, data: bytes) -> str:
        digest = digest_of(data)
        self.store.blobs.setdefault(repository_of(name), {})[digest] = data
        return digest

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        digest = digest_of(body)
        self.store.manifests[(name, digest)] = (body, media_type)
        if not reference.startswith("sha256:"):
            self.store.tags[(name, reference)] = digest
        return digest

    def put_image(self, name: str, tag: str, image: Any) -> str:
        """An ``Image`` or ``Index`` from ``testkit.images``, blobs and children too."""
        for blob in image.blobs:
            self.put_blob(name, blob.data)
        for child in getattr(image, "images", ()):
            self.put_manifest(name, child.digest, child.manifest, child.media_type)
        return self.put_manifest(name, tag, image.manifest, image.media_type)

    # ------------------------------------------------------------------ manifests

    async def manifest(
        self, name: str, groups: dict[str, Any], request: Request, send: Any
    ) -> None:
        reference = groups["ref"]
        if request.method == "PUT":
            await self._put_manifest(name, reference, request, send)
            return
        digest = (
            reference if reference.startswith("sha256:") else self.store.tags.get((name, reference))
        )
        found = self.store.manifests.get((name, digest or ""))
        if request.method == "DELETE":
            await self._delete_manifest(name, reference, found is not None, send)
            return
        if found is None:
            await respond(
                send, 404, JSON, oci_error("MANIFEST_UNKNOWN", f"Manifest {reference!r} not found")
            )
            return
        body, media_type = found
        knobs = self.knobs
        if knobs.manifest_type_params:
            media_type += "; charset=utf-8"
        headers: Headers = [("content-type", media_type)]
        if knobs.manifest_digest:
            headers.append(("docker-content-digest", digest_of(body)))
        if request.method == "HEAD":
            if knobs.manifest_head_length:
                headers.append(("content-length", str(len(body))))
            await respond(send, 200, headers, length=False, head=True)
            return
        sent, extra = maybe_gzip(knobs, dict(request.headers), body)
        chunked = knobs.manifest_chunked or bool(extra)
        await respond(send, 200, headers + extra, [sent] if chunked else sent, length=not chunked)

    async def _put_manifest(self, name: str, reference: str, request: Request, send: Any) -> None:
        body = await request.body()
        if len(body) > MANIFEST_LIMIT:
            await respond(send, 413, JSON, oci_error("SIZE_INVALID", "manifest too large"))
            return
        try:
            parsed = json.loads(body)
        except ValueError:
            await respond(send, 400, JSON, oci_error("MANIFEST_INVALID", "manifest invalid"))
            return
        digest = digest_of(body)
        if reference.startswith("sha256:") and reference != digest:
            await respond(send, 400, JSON, oci_error("DIGEST_INVALID", "digest mismatch"))
            return
        if missing := self._missing_references(name, parsed):
            code = "MANIFEST_BLOB_UNKNOWN"
            await respond(send, 400, JSON, oci_error(code, f"blob unknown: {missing}"))
            return
        media_type = request.headers.get("content-type") or parsed.get("mediaType", "")
        self.put_manifest(name, reference, body, media_type.split(";")[0].strip())
        headers: Headers = [("location", f"/v2/{name}/manifests/{digest}")]
        if self.knobs.manifest_digest:
            headers.append(("docker-content-digest", digest))
        await respond(send, 201, headers)

    def _missing_references(self, name: str, parsed: Any) -> str:
        blobs = self.store.blobs.get(repository_of(name), {})
        if not isinstance(parsed, dict):
            return "?"
        for child in parsed.get("manifests", []) or []:
            if (name, child.get("digest")) not in self.store.manifests:
                return str(child.get("digest"))
        for item in [parsed.get("config") or {}, *(parsed.get("layers") or [])]:
            if item and item.get("digest") not in blobs:
                return str(item.get("digest"))
        return ""

    async def _delete_manifest(self, name: str, reference: str, found: bool, send: Any) -> None:
        if not found:
            await respond(send, 404, JSON, oci_error("MANIFEST_UNKNOWN", "not found"))
            return
        if reference.startswith("sha256:"):
            self.store.manifests.pop((name, reference), None)
        else:
            self.store.tags.pop((name, reference), None)
        await respond(send, 202, [])

    # ------------------------------------------------------------------ blobs

    async def blob(self, name: str, groups: dict[str, Any], request: Request, send: Any) -> None:
        digest = groups["digest"]
        data = self.store.blobs.get(repository_of(name), {}).get(digest)
        if request.method not in ("GET", "HEAD"):
            await respond(send, 405, JSON, oci_error("UNSUPPORTED", "method not allowed"))
            return
        if data is None:
            await respond(send, 404, JSON, oci_error("BLOB_UNKNOWN", f"Blob {digest} not found"))
            return
        knobs = self.knobs
        redirect = knobs.download_status != 200 and (
            request.method == "GET" or knobs.head_redirects
        )
        if redirect:
            location = self.signed_download(request, name, digest)
            await respond(send, knobs.download_status, [("location", location)])
            return
        await self.serve_blob(data, digest, request, send)

    def signed_download(self, request: Request, name: str, digest: str) -> str:
        project, repository = repository_of(name).split("/")
        signature = self.new_opaque(780)
        self.downloads[signature] = (repository_of(name), digest)
        form = self.knobs.download_location
        if form == "storage":
            return (
                f"{self.storage_url}/storage/twin-bucket/{signature}?X-Goog-Algorithm="
                f"GOOG4-RSA-SHA256&X-Goog-Signature={quote(signature[:64])}"
            )
        path = (
            f"/artifacts-downloads/namespaces/{project}/repositories/{repository}"
            f"/downloads/{signature}"
        )
        return f"http://{request.headers['host']}{path}" if form == "absolute" else path

    async def download(self, signature: str, request: Request, send: Any) -> None:
        self.download_auth.append("authorization" in request.headers)
        found = self.downloads.get(signature)
        if found is None or request.method not in ("GET", "HEAD"):
            await respond(send, 403, [("content-type", "text/plain")], b"Forbidden")
            return
        repository, digest = found
        await self.serve_blob(self.store.blobs[repository][digest], digest, request, send)

    async def serve_blob(self, data: bytes, digest: str, request: Request, send: Any) -> None:
        knobs = self.knobs
        headers: Headers = [
            ("content-type", "application/octet-stream"),
            ("docker-content-digest", digest),
            ("accept-ranges", "bytes"),
        ]
        if request.method == "HEAD":
            if knobs.head_length:
                headers.append(("content-length", str(len(data))))
            await respond(send, 200, headers, length=False, head=True)
            return
        status, body = 200, data
        wanted = request.headers.get("range", "")
        self.ranges_asked.append(wanted)
        if knobs.ranges and wanted.startswith("bytes=") and "," not in wanted:
            first, _, last = wanted[6:].partition("-")
            if first.isdigit() and int(first) >= len(data):  # RFC 9110: not satisfiable
                refused = [("content-range", f"bytes */{len(data)}")]
                await respond(send, 416, refused, b"")
                return
            if first.isdigit():
                end = min(int(last), len(data) - 1) if last.isdigit() else len(data) - 1
                status, body = 206, data[int(first) : end + 1]
                headers.append(("content-range", f"bytes {first}-{end}/{len(data)}"))
        sent, extra = maybe_gzip(knobs, dict(request.headers), body)
        chunked = knobs.download_chunked or bool(extra)
        pieces = [sent[i : i + 65536] for i in range(0, len(sent), 65536)] or [b""]
        await respond(
            send, status, headers + extra, pieces if chunked else sent, length=not chunked
        )

    # ------------------------------------------------------------------ tags

    async def tags(self, name: str, groups: dict[str, Any], request: Request, send: Any) -> None:
        every = sorted(tag for (image, tag) in self.store.tags if image == name)
        last = request.query_params.get("last", "")
        number = request.query_params.get("n", "")
        size = int(number) if number.isdigit() else self.knobs.tag_page
        listed = [tag for tag in every if tag > last] if last else every
        headers: Headers = list(JSON)
        if size and len(listed) > size:
            listed = listed[:size]
            link = f"/v2/{name}/tags/list?n={size}&last={quote(listed[-1])}"
            if self.knobs.link_absolute:
                link = f"http://{request.headers['host']}{link}"
            headers.append(("link", f'<{link}>; rel="next"'))
        await respond(send, 200, headers, json_answer(self._tag_list(name, listed)))

    def _tag_list(self, name: str, listed: list[str]) -> dict[str, Any]:
        """GCR's shape (N3): ``child``, ``manifest`` (by digest), ``name``, ``tags``."""
        manifest: dict[str, Any] = {}
        for tag in listed:
            digest = self.store.tags[(name, tag)]
            body, media_type = self.store.manifests[(name, digest)]
            entry = manifest.setdefault(
                digest,
                {
                    "imageSizeBytes": str(len(body)),
                    "mediaType": media_type,
                    "tag": [],
                    "timeCreatedMs": "0",
                    "timeUploadedMs": 0,
                },
            )
            entry["tag"].append(tag)
        prefix = name + "/"
        children = sorted(
            {
                image[len(prefix) :].split("/")[0]
                for image, _ in self.store.manifests
                if image.startswith(prefix)
            }
        )
        if not listed and self.knobs.nulls_for_empty:  # a Go nil slice, marshalled
            return {"child": children or None, "manifest": manifest, "name": name, "tags": None}
        return {"child": children, "manifest": manifest, "name": name, "tags": listed}
