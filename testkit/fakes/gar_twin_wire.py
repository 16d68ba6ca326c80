"""What the GAR twin puts on the wire: its answers and the variants each may take.

Written from the public evidence only (docs/GAR.md's sources), never from the project's
own fake, so the proxy meets a second reading of the same evidence. Every behaviour the
record leaves open is a field of :class:`Knobs`; the default is the reading the evidence
favours, and each other value is an answer a real GAR could plausibly give.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Send = Any  # the ASGI send callable


@dataclass
class Knobs:
    """Open variants (``docs/GAR.md`` says which are unknown).

    Tokens (go-containerregistry ``transport/bearer.go`` reads ``token`` or
    ``access_token``; skia-buildbot ``go/gcr`` and e2b-dev/infra ``token.go`` read
    ``token`` and ``expires_in`` from GAR/GCR):"""

    token_field: Literal["token", "access_token", "both"] = "token"
    expires_in: int | str | None = 3600  # None: left out; a string: sent as one
    issued_at: bool = True
    realm_query: str = ""  # the realm's own query string, kept by clients (ggcr)
    challenge_service: bool = False  # A1: GAR's /v2/ challenge names no service
    challenge_scope: bool = False  # 2021 transcripts: scope on a repository's challenge
    basic_challenge_first: bool = False  # a Basic challenge in its own header, first
    raw_bearer: bool = True  # A2: a Google access token works directly on /v2/
    token_uses: int = 0  # a registry token stops working after N requests (0: never)
    # Upload sessions (U1-U10):
    upload_location: Literal["relative", "absolute", "query", "pkg", "none"] = "relative"
    session_auth: bool = False  # harbor#17179: 401 on /artifacts-uploads/ without it
    session_challenge: bool = True  # WWW-Authenticate on a 401 outside /v2/ (sessions)
    upload_uuid: bool = False  # Docker-Upload-UUID on the POST's answer
    patch_status: int = 202
    patch_location: Literal["new", "same", "none"] = "same"
    patch_range: Literal["0-N", "bytes=0-N", "0-0", "none"] = "0-N"
    put_status: int = 201
    put_digest: bool = True  # Docker-Content-Digest on the committing PUT's answer
    monolithic_post: Literal["created", "session", "refused"] = "session"
    mount: Literal["created", "session"] = "created"
    second_write_status: int = 400
    # Downloads (D1-D5):
    download_status: int = 302  # 302, 303, 307; 200 serves the blob on /v2/ itself
    download_location: Literal["relative", "absolute", "storage"] = "relative"
    head_redirects: bool = False
    head_length: bool = True  # Content-Length on a blob HEAD
    ranges: bool = True  # a Range answered 206 (else 200 with the whole blob)
    download_chunked: bool = False
    gzip: bool = False  # gzip a body when the request accepts it (Google front ends do)
    # Manifests and tags:
    manifest_type_params: bool = False  # "...+json; charset=utf-8"
    manifest_digest: bool = True  # Docker-Content-Digest on manifest answers
    manifest_head_length: bool = True
    manifest_chunked: bool = False
    link_absolute: bool = False  # tags/list's Link header as an absolute URL
    tag_page: int = 0  # entries per tags/list page when the client names no n (0: all)
    nulls_for_empty: bool = False  # an empty list as JSON null (a Go nil slice)
    close_connections: bool = False  # no keep-alive: every answer says Connection: close


# --------------------------------------------------------------------------- state


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def repository_of(name: str) -> str:
    """GAR's repository (``PROJECT/REPOSITORY``) of an image name (names page, N7)."""
    return "/".join(name.split("/")[:2])


@dataclass
class Grant:
    """A registry token: what it may do, and how many more requests it works for."""

    scopes: dict[str, set[str]]
    uses_left: int | None


@dataclass
class Store:
    repositories: set[str] = field(default_factory=set)
    blobs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repository -> blobs
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)


# --------------------------------------------------------------------------- bodies


def oci_error(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def google_error(status: int, message: str, reason: str = "") -> bytes:
    """AIP-193's shape (R1), as Google front ends answer outside the OCI envelope."""
    error: dict[str, Any] = {"code": status, "message": message, "status": "PERMISSION_DENIED"}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        ]
    return json.dumps({"error": error}).encode()


def html_error(status: int) -> bytes:
    """A Google front end's HTML error page (what a 502/503 from the edge looks like)."""
    return (
        f"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error {status} "
        f"(Server Error)!!1</title><p><b>{status}.</b> <ins>That's an error.</ins>"
        "<p>The server encountered a temporary error. <ins>That's all we know.</ins>"
    ).encode()


BODIES = {"oci", "google", "html", "empty", "unknown-code", "no-errors"}


def fault_body(kind: str, status: int) -> tuple[bytes, str]:
    """(body, content type) of a fault answer."""
    if kind == "google":
        return google_error(status, "The caller does not have permission"), "application/json"
    if kind == "html":
        return html_error(status), "text/html; charset=UTF-8"
    if kind == "empty":
        return b"", "text/plain"
    if kind == "unknown-code":
        return oci_error("SOMETHING_NEW", "a code no spec names"), "application/json"
    if kind == "no-errors":
        return b'{"errors":[]}', "application/json"
    code = {
        401: "UNAUTHORIZED",
        403: "DENIED",
        404: "NAME_UNKNOWN",
        429: "TOOMANYREQUESTS",
        400: "BLOB_UPLOAD_INVALID",
    }.get(status, "UNKNOWN")
    return oci_error(code, f"twin fault {status}"), "application/json"


# --------------------------------------------------------------------------- sending


Headers = list[tuple[str, str]]


def accepts_gzip(headers: dict[str, str]) -> bool:
    return "gzip" in headers.get("accept-encoding", "").lower()


async def respond(
    send: Send,
    status: int,
    headers: Headers,
    body: bytes | Iterable[bytes] | AsyncIterator[bytes] = b"",
    *,
    length: bool = True,
    head: bool = False,
) -> None:
    """Send exactly ``headers`` (no header is added behind the caller's back):
    ``length=False`` leaves Content-Length out (chunked for a body, none for a HEAD)."""
    chunks: list[bytes] | None = [body] if isinstance(body, bytes) else None
    if length and chunks is not None and not any(k.lower() == "content-length" for k, _ in headers):
        headers = [*headers, ("content-length", str(len(chunks[0])))]
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    if head:
        await send({"type": "http.response.body", "body": b""})
        return
    if chunks is not None:
        await send({"type": "http.response.body", "body": chunks[0]})
        return
    if hasattr(body, "__aiter__"):
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    else:
        for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def maybe_gzip(knobs: Knobs, request_headers: dict[str, str], body: bytes) -> tuple[bytes, Headers]:
    """The body as a Google front end may send it: gzip'd when asked for and on."""
    if knobs.gzip and accepts_gzip(request_headers):
        return gzip.compress(body, mtime=0), [
            ("content-encoding", "gzip"),
            ("vary", "Accept-Encoding"),
        ]
    return body, []


def json_answer(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
