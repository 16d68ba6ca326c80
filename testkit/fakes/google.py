"""Fake Google OAuth token endpoint and fake GCE metadata server, for real loopback tests.

Both are Starlette apps that google-auth talks to over real HTTP, so its real code paths run:
the JWT-bearer grant (whose RS256 signature the fake verifies against the keys it issued),
the refresh-token grant of ``gcloud auth application-default login``, and the metadata
server's ping, service-account and token endpoints::

    oauth = FakeOAuth()
    with oauth.serving():
        key = oauth.service_account()        # key-file JSON whose token_uri points here
        ...                                  # google-auth obtains a token
        assert oauth.token_requests == 1
        assert oauth.issued[token].scopes == ("https://www.googleapis.com/auth/cloud-platform",)

Tokens from either fake land in ``issued`` so a fake registry can accept exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as google_exceptions
from google.auth import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from testkit.servers import ThreadedServer

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth always addresses its assertion to Google's endpoint, whatever token_uri says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# What GKE's metadata server answers (403, text/plain) to a pod whose Kubernetes service
# account is not bound to a Google one, as quoted in camunda/camunda#31106 (GAR.md R9).
WORKLOAD_IDENTITY_UNBOUND = (
    "Unable to generate access token; IAM returned 403 Forbidden: Permission "
    "'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).\n"
    "This error could be caused by a missing IAM policy binding on the target IAM service "
    "account.\nFor more information, refer to the Workload Identity documentation:\n"
    "\thttps://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity#authenticating_to\n"
)


@dataclass(frozen=True)
class IssuedToken:
    subject: str  # service-account email, refresh-token client, or metadata account
    scopes: tuple[str, ...]
    expires_at: float  # time.time()


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict[str, Any]  # the key-file JSON
    public_pem: bytes

    @property
    def key_id(self) -> str:
        return str(self.info["private_key_id"])

    @property
    def email(self) -> str:
        return str(self.info["client_email"])

    @property
    def private_key(self) -> str:
        return str(self.info["private_key"])


def make_service_account_key(
    token_uri: str, email: str | None = None, project_id: str = "fake-project"
) -> ServiceAccountKey:
    """A service-account key file as the console would hand it out, with a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = email or f"sa-{secrets.token_hex(4)}@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return ServiceAccountKey(info, public_pem)


def make_authorized_user(token_uri: str) -> dict[str, str]:
    """An ``application_default_credentials.json`` as ``gcloud auth application-default login``
    writes it."""
    return {
        "type": "authorized_user",
        "client_id": f"{secrets.token_hex(6)}.apps.googleusercontent.com",
        "client_secret": secrets.token_urlsafe(18),
        "refresh_token": "1//" + secrets.token_urlsafe(40),
        "token_uri": token_uri,
    }


def _invalid_grant(description: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_grant", "error_description": description}, 400)


class _Issuer:
    """Mints tokens and remembers them; shared by both fakes."""

    def __init__(self) -> None:
        self.expires_in = 3600
        self.issued: dict[str, IssuedToken] = {}
        self.token_requests = 0
        self.delay_seconds = 0.0  # hold each token answer this long
        self.url = ""
        self._mutex = threading.Lock()

    def mint(self, subject: str, scopes: tuple[str, ...]) -> dict[str, Any]:
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self._mutex:
            self.issued[token] = IssuedToken(subject, scopes, time.time() + self.expires_in)
        return {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def is_valid(self, token: str) -> bool:
        issued = self.issued.get(token)
        return issued is not None and issued.expires_at > time.time()

    def scopes_of(self, token: str) -> tuple[str, ...] | None:
        """The OAuth scopes ``token`` was issued with (None: not ours); a fake GAR or
        Container Analysis reads them to refuse what Google would (docs/GAR.md R6)."""
        issued = self.issued.get(token)
        return issued.scopes if issued is not None else None

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        server = ThreadedServer(self.app()).start()
        self.url = server.url
        try:
            yield server.url
        finally:
            server.stop()

    def app(self) -> Starlette:
        raise NotImplementedError


class FakeOAuth(_Issuer):
    """``POST /token`` for the JWT-bearer and refresh-token grants."""

    def __init__(self) -> None:
        super().__init__()
        self.public_keys: dict[str, bytes] = {}  # key id -> public PEM
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> client id
        self.revoked: set[str] = set()  # key ids and refresh tokens

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    def service_account(self, email: str | None = None) -> ServiceAccountKey:
        key = make_service_account_key(self.token_uri, email)
        self.public_keys[key.key_id] = key.public_pem
        return key

    def authorized_user(self) -> dict[str, str]:
        info = make_authorized_user(self.token_uri)
        self.refresh_tokens[info["refresh_token"]] = info["client_id"]
        return info

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/token", self._token, methods=["POST"])])

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = urllib.parse.parse_qs((await request.body()).decode())
        fields = {name: values[0] for name, values in form.items()}
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if fields.get("grant_type") == JWT_GRANT:
            return self._jwt_grant(fields.get("assertion", ""))
        if fields.get("grant_type") == "refresh_token":
            return self._refresh_grant(fields)
        return JSONResponse({"error": "unsupported_grant_type"}, 400)

    def _jwt_grant(self, assertion: str) -> Response:
        try:
            header = jwt.decode_header(assertion)  # type: ignore[no-untyped-call]
            claims = jwt.decode(  # type: ignore[no-untyped-call]
                assertion, certs=self.public_keys, audience=GOOGLE_TOKEN_AUDIENCE
            )
        except (google_exceptions.GoogleAuthError, ValueError):
            return _invalid_grant("Invalid JWT Signature.")
        if header.get("kid") in self.revoked:
            return _invalid_grant("Invalid JWT Signature.")
        scopes = tuple(str(claims.get("scope", "")).split())
        if not scopes:
            return JSONResponse(
                {
                    "error": "invalid_scope",
                    "error_description": "Invalid OAuth scope or ID token audience provided.",
                },
                400,
            )
        return JSONResponse(self.mint(str(claims["iss"]), scopes))

    def _refresh_grant(self, fields: dict[str, str]) -> Response:
        refresh_token = fields.get("refresh_token", "")
        client_id = self.refresh_tokens.get(refresh_token)
        if client_id is None or refresh_token in self.revoked:
            return _invalid_grant("Token has been expired or revoked.")
        if fields.get("client_id") != client_id:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Unauthorized"}, 401
            )
        scopes = tuple(fields.get("scope", "").split()) or DEFAULT_SCOPES
        body = self.mint(client_id, scopes)
        body["scope"] = " ".join(scopes)
        return JSONResponse(body)


class FakeMetadata(_Issuer):
    """The GCE / GKE metadata server's endpoints that google-auth uses."""

    def __init__(
        self,
        email: str = "vm-sa@fake-project.iam.gserviceaccount.com",
        project_id: str = "fake-project",
    ) -> None:
        super().__init__()
        self.email = email
        self.project_id = project_id
        self.requests: Counter[str] = Counter()  # path -> count
        self._failure: tuple[int, str, frozenset[str]] | None = None
        self._failures_left: int | None = None

    def fail(
        self,
        status: int,
        body: str,
        *,
        paths: tuple[str, ...] = ("token",),
        times: int | None = None,
    ) -> None:
        """Answer ``status`` with ``body`` (plain text, as the GKE metadata server does) on
        the account's ``token`` and/or ``info`` endpoints, ``times`` times (None: until
        ``recover``). Bodies as seen in production (docs/GAR.md R9)::

            metadata.fail(403, WORKLOAD_IDENTITY_UNBOUND)   # KSA not bound to a GSA
            metadata.fail(404, "Not Found\\n", paths=("info",))  # no such service account
            metadata.fail(503, "GKE Metadata Server: Internal Server Error", times=5)
        """
        self._failure = (status, body, frozenset(paths))
        self._failures_left = times

    def recover(self) -> None:
        self._failure = None

    def _failing(self, which: str) -> Response | None:
        failure = self._failure
        if failure is None or which not in failure[2]:
            return None
        if self._failures_left is not None:
            if self._failures_left <= 0:
                return None
            self._failures_left -= 1
        return self._flavoured(PlainTextResponse(failure[1], failure[0]))

    def app(self) -> Starlette:
        # "default" or the account's email, as google-auth asks once it knows it.
        account = "/computeMetadata/v1/instance/service-accounts/{account}"
        return Starlette(
            routes=[
                Route("/", self._ping),  # google-auth pings the bare host (GCE_METADATA_IP)
                Route("/computeMetadata/v1/", self._ping),
                Route(account + "/", self._account),
                Route(account + "/token", self._token),
                Route("/computeMetadata/v1/project/project-id", self._project_id),
            ]
        )

    @staticmethod
    def _flavoured(response: Response) -> Response:
        response.headers["Metadata-Flavor"] = "Google"
        return response

    def _refuse(self, request: Request) -> Response | None:
        self.requests[request.url.path] += 1
        # The real server refuses requests without the header (SSRF protection).
        if request.headers.get("metadata-flavor") != "Google":
            return PlainTextResponse("Missing Metadata-Flavor:Google header.", 403)
        return None

    async def _ping(self, request: Request) -> Response:
        return self._refuse(request) or self._flavoured(PlainTextResponse("computeMetadata/\n"))

    def _unknown_account(self, request: Request) -> Response | None:
        if request.path_params["account"] in ("default", self.email):
            return None
        return self._flavoured(PlainTextResponse("Not Found\n", 404))

    async def _account(self, request: Request) -> Response:
        if refused := (
            self._refuse(request) or self._unknown_account(request) or self._failing("info")
        ):
            return refused
        return self._flavoured(
            JSONResponse(
                {"aliases": ["default"], "email": self.email, "scopes": list(DEFAULT_SCOPES)}
            )
        )

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1  # failed answers too: google-auth's retries are counted
        if refused := (
            self._refuse(request) or self._unknown_account(request) or self._failing("token")
        ):
            return refused
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        requested = request.query_params.get("scopes", "")
        scopes = tuple(s for s in requested.split(",") if s) or DEFAULT_SCOPES
        return self._flavoured(JSONResponse(self.mint(self.email, scopes)))

    async def _project_id(self, request: Request) -> Response:
        return self._refuse(request) or self._flavoured(PlainTextResponse(self.project_id))
