"""A fake Google Artifact Registry: the upstream in most tests.

One server plays every location; registry routes live under ``/{location}/v2/`` and
the Artifact Registry REST API under ``/v1/``, so the proxy's upstream template in
tests is ``URL + "/{location}"`` and its API base is ``URL``::

    fake = FakeGAR(access_tokens={"ya29.test"})
    fake.put_image("us", "proj/repo/app", "1.0", build_image([make_layer()]))
    with fake.serve() as url:                   # real uvicorn on 127.0.0.1
        ...                                     # run the proxy against f"{url}/{{location}}"
    assert fake.count("GET", "blob") == 1       # what reached "GAR"

It follows what GAR is known to do (``docs/GAR.md``; each behaviour's code cites its
row there), not what a plain OCI registry does:

- Repositories exist only once created (``add_repository``, or seeding content with
  ``put_image``/``put_blob``, as a test's ``gcloud artifacts repositories create``);
  a push never creates one (A9). ``auto_create_repositories=True`` is the plain OCI
  registry's behaviour, for tests about one.
- IAM before existence (A7, A8): ``grant(token, Principal...)`` gives a token a
  repository-scoped principal (403 "(or it may not exist)" for every repository it
  cannot see) or a project-wide one (404 ``Repository "R" not found``).
- Image names of domain-scoped projects (``example.com:proj``) are written
  ``example.com/proj/repo/image`` (N5); ``/rep/LOCATION/v2/`` plays the regional
  endpoint ``docker.LOCATION.rep.pkg.dev`` (N6).

Auth (``auth="gcp"``): every ``/v2`` request needs ``Authorization: Bearer T`` with T a
Google access token in ``fake.access_tokens`` (unless ``registry_token_only``) or a
registry token bought at ``/{location}/v2/token`` with Basic credentials GAR takes
(A3); otherwise 401 with the Bearer challenge. With ``strict_scopes`` a registry token
only covers the repositories and actions it was issued for. Tokens in
``read_only_tokens`` are project-wide readers. ``token_scopes(token)`` tells the fake a
token's OAuth scopes (R6). The REST API takes access tokens only.

Faults (``add_fault(Fault(...))``) match on method, kind, path regex and location.
A ``status`` fault answers instead of the registry; ``delay`` sleeps before the headers;
``slow_body``, ``truncate_at``, ``corrupt`` and a ``reset`` with ``truncate_at`` act on
successful responses with a body (a fault is used up only when it acts), as do
``chunked`` (no Content-Length) and ``gzip`` (``Content-Encoding: gzip``); a bare
``reset`` drops the connection before any response; ``redirect`` answers 307 to the
same resource under ``/_redirected/`` on the same server (the fault's ``path``
matches the path asked for, so ``path=r"^/us/"`` leaves the target alone).

Content lives in memory: blobs once by digest, linked per (location, image name), as
in the CNCF registry; manifests keep their exact bytes and media type.

The code is split by concern. This module keeps ``FakeGAR`` itself: the constructor,
counts, adding faults and the ASGI entry. Its mixins are ``gar_content`` (repositories
and their content, seeding and reading), ``gar_auth`` (auth, registry tokens),
``gar_rest`` (the REST metadata API), ``gar_api`` (ping, manifests, blobs, tag lists,
referrers), ``gar_uploads`` (blob uploads) and ``gar_faults`` (carrying out faults on
the wire); ``gar_iam`` holds principals and IAM's words, ``gar_shapes`` Google's error
shape and manifest digests, ``gar_model`` the value types, constants and helpers.
Import from here: the public names are re-exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Literal

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from testkit.fakes.gar_api import RegistryApiMixin
from testkit.fakes.gar_auth import AuthMixin
from testkit.fakes.gar_content import ContentMixin
from testkit.fakes.gar_downloads import DownloadsMixin
from testkit.fakes.gar_faults import REDIRECTED, FaultsMixin, _cut, _is_cut
from testkit.fakes.gar_iam import Principal, Scopes
from testkit.fakes.gar_model import (
    CHUNK,
    DEFAULT_LOCATIONS,
    MANIFEST_LIMIT,
    Buffer,
    Fault,
    GarRepository,
    IssuedToken,
    Kind,
    Recorded,
    _ApiError,
    _ImageRepo,
    _Route,
    _Upload,
    classify,
)
from testkit.fakes.gar_rest import MetadataApiMixin
from testkit.fakes.gar_shapes import Schema1Digest
from testkit.fakes.gar_uploads import UploadsMixin
from testkit.servers import serve_in_thread

__all__ = [
    "CHUNK",
    "DEFAULT_LOCATIONS",
    "MANIFEST_LIMIT",
    "Buffer",
    "FakeGAR",
    "Fault",
    "GarRepository",
    "Handler",
    "IssuedToken",
    "Kind",
    "Principal",
    "Recorded",
    "classify",
]

# ---------------------------------------------------------------- the fake


Handler = Callable[[Request, _Route], Awaitable[Response]]


class FakeGAR(
    ContentMixin,
    AuthMixin,
    MetadataApiMixin,
    RegistryApiMixin,
    UploadsMixin,
    DownloadsMixin,
    FaultsMixin,
):
    """The fake registry and REST API as one ASGI app (Starlette requests and responses)."""

    def __init__(
        self,
        *,
        auth: Literal["gcp", "none"] = "gcp",
        access_tokens: Iterable[str] = (),
        read_only_tokens: Iterable[str] = (),
        registry_token_only: bool = False,
        strict_scopes: bool = True,
        registry_token_ttl: float = 3600,
        locations: Iterable[str] = DEFAULT_LOCATIONS,
        auto_create_repositories: bool = False,
        token_scopes: Scopes | None = None,
        schema1_digest: Schema1Digest = "canonical",
        referrers_api: bool = True,
        upload_state_query: bool = False,
        absolute_locations: bool = False,
        chunk_size: int = CHUNK,
        default_location: str | None = "us",
        plain_uploads: bool = False,
        blob_redirects: bool = True,
    ) -> None:
        self.auth = auth
        self.access_tokens: set[str] = set(access_tokens)
        self.read_only_tokens: set[str] = set(read_only_tokens)
        self.registry_token_only = registry_token_only
        self.strict_scopes = strict_scopes
        self.registry_token_ttl = registry_token_ttl
        self.locations: set[str] = set(locations)
        self.auto_create_repositories = auto_create_repositories  # GAR never does (A9)
        self.token_scopes = token_scopes
        self.schema1_digest: Schema1Digest = schema1_digest  # N2: GAR's rule is unknown
        self.principals: dict[str, Principal] = {}
        self.json_keys: dict[str, str] = {}  # private_key_id -> the access token it acts as
        self.disabled_apis: set[str] = set()  # e.g. "artifactregistry.googleapis.com"
        self.tag_list_limit = 10_000  # N4: GAR's Docker API lists at most this many
        self.repository_challenge_service = True  # A1: seen in 2021; today's is unknown
        self.referrers_api = referrers_api
        # Whether and how GAR pages a referrers index is unknown (docs/GAR.md N8): by
        # default one answer holds them all; with a size, pages linked by an opaque
        # cursor, the Link on ``referrers_link_host`` when set (a link elsewhere).
        self.referrers_page_size: int | None = None
        self.referrers_link_host: str | None = None
        self.referrers_queries: list[str] = []  # each referrers request's raw query
        self.upload_state_query = upload_state_query
        self.upload_chunk_min_length: int | None = None  # sent as OCI-Chunk-Min-Length
        self.absolute_locations = absolute_locations
        self.chunk_size = chunk_size
        # GAR's upload sessions and signed downloads (gar_uploads, gar_downloads), or a
        # plain OCI registry's chunked sessions under /v2/ and direct blob GETs.
        self.plain_uploads = plain_uploads
        self.blob_redirects = blob_redirects
        self._init_uploads()
        self._init_downloads()
        self.default_location = default_location  # serves plain /v2/ for real clients
        self.issued_tokens: dict[str, IssuedToken] = {}
        self.repositories: dict[tuple[str, str, str], GarRepository] = {}
        self.requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self._blobs: dict[str, Buffer] = {}
        self._images: dict[tuple[str, str], _ImageRepo] = {}
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.RLock()
        self._served_at: str | None = None
        self._handlers: dict[Kind, Handler] = {
            "ping": self._ping,
            "token": self._token,
            "manifest": self._manifest,
            "blob": self._blob,
            "upload": self._upload,
            "download": self._download,
            "tags": self._tags,
            "referrers": self._referrers,
            "metadata": self._metadata,
        }

    @contextlib.contextmanager
    def serve(self, **config: Any) -> Iterator[str]:
        """Run under uvicorn on 127.0.0.1 (port 0); yields ``http://127.0.0.1:PORT``
        (``https://`` with ``ssl_context=``)."""
        with serve_in_thread(self, **config) as url:
            self._served_at = url
            try:
                yield url
            finally:
                self._served_at = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` while :meth:`serve` runs (the REST API's base)."""
        if self._served_at is None:
            raise RuntimeError("the fake GAR is not being served")
        return self._served_at

    @property
    def upstream(self) -> str:
        """The proxy's upstream template for this fake: one server plays every location."""
        return self.url + "/{location}"

    # ------------------------------------------------------------ tokens, counts, faults

    def accept_access_token(self, token: str) -> None:
        with self._lock:
            self.access_tokens.add(token)

    def revoke_access_token(self, token: str) -> None:
        with self._lock:
            self.access_tokens.discard(token)

    def grant(self, token: str, principal: Principal) -> None:
        """``token`` (accepted as an access token) acts for ``principal`` from now on."""
        with self._lock:
            self.access_tokens.add(token)
            self.principals[token] = principal

    def count(
        self,
        method: str | None = None,
        kind: Kind | None = None,
        *,
        path: str | None = None,
        location: str | None = None,
    ) -> int:
        """Requests received so far that match all the given filters (path: a regex).

        ``GET /v2/`` pings are counted only when asked for (``kind="ping"``): the proxy
        sends them on its own (readiness, the start-up report), never for a client."""
        with self._lock:
            recorded = list(self.requests)
        return sum(
            1
            for r in recorded
            if (method is None or r.method == method.upper())
            and (r.kind == kind if kind is not None else r.kind != "ping")
            and (location is None or r.location == location)
            and (path is None or re.search(path, r.path))
        )

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
        self._reset_uploads()

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path.startswith(REDIRECTED + "/"):  # a redirect fault's target: the same resource
            scope = {**scope, "path": path[len(REDIRECTED) :]}
        route, now, on_body = self._route(method, scope["path"], path)
        with self._lock:
            self.requests.append(Recorded(method, route.kind, path, route.location, route.regional))
        request = Request(scope, receive)
        request.scope["gar_fake.send"] = send  # a write cut mid-body (gar_uploads)
        wrapped = self._wrap_send(send, route, on_body)
        try:
            if now is not None:
                if now.delay:
                    await asyncio.sleep(now.delay)
                if now.reset:
                    await _cut(send, reset=True)
                    return
                if now.status is not None or now.redirect:
                    await self._fault_response(now, request, route)(scope, receive, wrapped)
                    return
            response = await self._respond(request, route)
            await response(scope, receive, wrapped)
        except ClientDisconnect:
            pass  # the proxy went away mid-request (killed, or it gave up): not our error
        except Exception as error:
            if not _is_cut(error):
                raise

    def _route(
        self, method: str, path: str, asked: str
    ) -> tuple[_Route, Fault | None, Fault | None]:
        """What ``path`` addresses, and the faults that act on it now and on its body.
        A signed download acts out the body faults of the blob GET it stands for."""
        signed = self._signed_download_route(path)
        if signed is not None:
            route, blob, blob_path = signed
            _, on_body = self._find_faults(method, blob, blob_path, body_only=True)
            return route, None, on_body
        route = self._signed_upload_route(path) or classify(path, self.default_location)
        now, on_body = self._find_faults(method, route, asked)
        return route, now, on_body

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, request: Request, route: _Route) -> Response:
        try:
            # GAR's upload sessions and signed downloads: the path is the credential.
            signed = route.kind == "download" or (
                route.kind == "upload" and route.ref != "" and not self.plain_uploads
            )
            denied = None if signed else self._authorize(request, route)
            if denied is not None:
                return denied
            handler = self._handlers.get(route.kind)
            if handler is None:
                raise _ApiError(404, "NOT_FOUND", f"no route for {request.url.path}")
            return await handler(request, route)
        except _ApiError as error:
            return error.response()
