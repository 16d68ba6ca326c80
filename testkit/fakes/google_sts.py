"""Fake Google STS (workload identity federation) and IAM Credentials endpoints.

google-auth's ``external_account`` credentials trade a subject token read from a file
(an OIDC token a CI system or another cloud wrote) at the Security Token Service for a
federated access token, then, when the credentials name a service account, trade that
for the account's access token at IAM Credentials' ``generateAccessToken``; the
``impersonated_service_account`` credentials do the second trade with a source
credential's token. Both fakes speak the wire formats google-auth reads (its
``google/oauth2/sts.py`` and ``google/auth/impersonated_credentials.py``)::

    sts = FakeSTS(audience=AUDIENCE)
    iam = FakeIAMCredentials(issuers=[sts, oauth])
    with sts.serving(), iam.serving():
        sts.accept_subject_token("eyJ...", subject="repo:org/app:ref:refs/heads/main")
        iam.allow(sts.principal("repo:org/app:ref:refs/heads/main"), "ci@p.iam.gserviceaccount.com")
        ...                                  # google-auth obtains a token
    assert iam.issued[token].scopes == (CLOUD_PLATFORM,)

Refusals are what Google answers (docs/GAR.md R11, R12): STS an OAuth error body
(``invalid_grant``), IAM Credentials Google's JSON error with ``IAM_PERMISSION_DENIED``.
"""

from __future__ import annotations

import datetime
import json
import urllib.parse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from testkit.fakes.google import DEFAULT_SCOPES, _Issuer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
POOL = "projects/123456/locations/global/workloadIdentityPools/ci-pool"
AUDIENCE = f"//iam.googleapis.com/{POOL}/providers/ci-provider"


class FakeSTS(_Issuer):
    """``POST /v1/token``: RFC 8693 token exchange, as sts.googleapis.com does it."""

    def __init__(self, audience: str = AUDIENCE) -> None:
        super().__init__()
        self.audience = audience
        self.subject_tokens: dict[str, str] = {}  # subject token -> its subject
        self.exchanges: list[dict[str, str]] = []  # the form fields of each request

    @property
    def token_url(self) -> str:
        return self.url + "/v1/token"

    def accept_subject_token(self, token: str, subject: str) -> None:
        self.subject_tokens[token] = subject

    @staticmethod
    def principal(subject: str) -> str:
        return f"principal://iam.googleapis.com/{POOL}/subject/{subject}"

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/token", self._token, methods=["POST"])])

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = urllib.parse.parse_qs((await request.body()).decode())
        fields = {name: values[0] for name, values in form.items()}
        self.exchanges.append(fields)
        if fields.get("grant_type") != TOKEN_EXCHANGE:
            return _oauth_error("unsupported_grant_type", "Unsupported grant type.")
        if fields.get("audience") != self.audience:
            return _oauth_error("invalid_target", "The target service indicated by the "
                                "\"audience\" parameters is invalid.")  # fmt: skip
        subject = self.subject_tokens.get(fields.get("subject_token", ""))
        if subject is None:
            return _oauth_error("invalid_grant", "The subject token could not be verified.")
        scopes = tuple(fields.get("scope", "").split()) or DEFAULT_SCOPES
        body = self.mint(self.principal(subject), scopes)
        body["issued_token_type"] = ACCESS_TOKEN_TYPE
        return JSONResponse(body)


class FakeIAMCredentials(_Issuer):
    """``POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken``: a caller with
    roles/iam.serviceAccountTokenCreator on EMAIL gets the account's access token."""

    def __init__(self, issuers: list[_Issuer]) -> None:
        super().__init__()
        self.issuers = issuers  # who may have issued the caller's token
        self.creators: dict[str, set[str]] = {}  # service account -> allowed callers

    def endpoint(self, email: str) -> str:
        return f"{self.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"

    def allow(self, caller: str, email: str) -> None:
        self.creators.setdefault(email, set()).add(caller)

    def app(self) -> Starlette:
        path = "/v1/projects/-/serviceAccounts/{target}"
        return Starlette(routes=[Route(path, self._generate, methods=["POST"])])

    def _caller(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        for issuer in self.issuers:
            if issuer.is_valid(token):
                return issuer.issued[token].subject
        return None

    async def _generate(self, request: Request) -> Response:
        self.token_requests += 1
        email, _, verb = request.path_params["target"].partition(":")
        if verb != "generateAccessToken":
            return _google_error(404, "Method not found.", "NOT_FOUND")
        caller = self._caller(request)
        if caller is None:
            return _google_error(
                401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"
            )
        if caller not in self.creators.get(email, set()):
            return _google_error(
                403,
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
                "(or it may not exist).",
                "PERMISSION_DENIED",
                reason="IAM_PERMISSION_DENIED",
            )
        body = json.loads(await request.body() or b"{}")
        scopes = tuple(body.get("scope") or ()) or DEFAULT_SCOPES
        minted = self.mint(email, scopes)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.expires_in)
        return JSONResponse(
            {
                "accessToken": minted["access_token"],
                "expireTime": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )


class IssuedTokens(set[str]):
    """A ``FakeGAR.access_tokens`` that accepts exactly the live tokens some issuers
    issued (minus revocations), so the fake GAR trusts what google-auth obtained."""

    def __init__(self, *issuers: _Issuer) -> None:
        super().__init__()
        self.issuers = issuers
        self.revoked: set[str] = set()

    def __contains__(self, token: object) -> bool:
        return (
            isinstance(token, str)
            and token not in self.revoked
            and any(issuer.is_valid(token) for issuer in self.issuers)
        )

    def discard(self, token: object) -> None:
        if isinstance(token, str):
            self.revoked.add(token)

    def add(self, token: str) -> None:
        self.revoked.discard(token)

    def scopes_of(self, token: str) -> tuple[str, ...] | None:
        for issuer in self.issuers:
            found = issuer.scopes_of(token)
            if found is not None:
                return found
        return None


def _oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, 400)


def _google_error(status: int, message: str, code: str, *, reason: str | None = None) -> Response:
    error: dict[str, object] = {"code": status, "message": message, "status": code}
    if reason is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "iam.googleapis.com",
                "metadata": {"permission": "iam.serviceAccounts.getAccessToken"},
            }
        ]
    return JSONResponse({"error": error}, status)
