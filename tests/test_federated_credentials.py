"""Workload identity federation and impersonated service accounts, end to end.

google-auth runs for real against the fake STS and IAM Credentials (docs/GAR.md R11,
R12): an ``external_account`` file whose subject token is a file (as a CI system writes
one) is traded at STS, then, when it names a service account, at ``generateAccessToken``;
an ``impersonated_service_account`` file trades its source credentials' token there.
The proxy pulls through the fake GAR with what came out, and says what to fix when a
trade is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_iam import CLOUD_PLATFORM
from testkit.fakes.google import FakeOAuth
from testkit.fakes.google_sts import (
    AUDIENCE,
    TOKEN_EXCHANGE,
    FakeIAMCredentials,
    FakeSTS,
    IssuedTokens,
)
from testkit.images import Image, build_image, make_layer
from tests.conftest import FakeGarFactory, ProxyFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
REPO = "proj/repo/app"
TARGET = "ci-pusher@proj.iam.gserviceaccount.com"
SUBJECT = "repo:org/app:ref:refs/heads/main"
JWT = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture
def sts() -> Iterator[FakeSTS]:
    server = FakeSTS()
    with server.serving():
        yield server


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    server = FakeOAuth()
    with server.serving():
        yield server


@pytest.fixture
def iam(sts: FakeSTS, oauth: FakeOAuth) -> Iterator[FakeIAMCredentials]:
    server = FakeIAMCredentials(issuers=[sts, oauth])
    with server.serving():
        yield server


def gar_trusting(fake_gar: FakeGarFactory, *issuers: Any) -> tuple[FakeGAR, Image]:
    fake = fake_gar(auth="gcp")
    fake.access_tokens = IssuedTokens(*issuers)
    image = build_image([make_layer({"f": b"federated"})])
    fake.put_image("us", REPO, "1.0", image)
    return fake, image


def pull(proxy: ProxyFactory, fake: FakeGAR, credentials: Path) -> httpx.Response:
    running = proxy(fake.upstream, auth="gcp", gcp__credentials_file=str(credentials))
    with httpx.Client(base_url=running.url, timeout=60) as http:
        return http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)


def external_account(tmp_path: Path, sts: FakeSTS, iam: FakeIAMCredentials | None) -> Path:
    token = tmp_path / "oidc-token"
    token.write_text("eyJ.subject-token.from-ci")
    config: dict[str, Any] = {
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": JWT,
        "token_url": sts.token_url,
        "credential_source": {"file": str(token)},
    }
    if iam is not None:
        config["service_account_impersonation_url"] = iam.endpoint(TARGET)
    path = tmp_path / "wif.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    "impersonating", [False, True], ids=["federated-token", "as-service-account"]
)
def test_a_pull_with_workload_identity_federation(
    impersonating: bool,
    sts: FakeSTS,
    iam: FakeIAMCredentials,
    fake_gar: FakeGarFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
) -> None:
    sts.accept_subject_token("eyJ.subject-token.from-ci", SUBJECT)
    iam.allow(sts.principal(SUBJECT), TARGET)
    fake, image = gar_trusting(fake_gar, iam if impersonating else sts)
    answer = pull(proxy, fake, external_account(tmp_path, sts, iam if impersonating else None))
    assert answer.status_code == 200, answer.text
    assert answer.content == image.manifest
    exchange = sts.exchanges[0]
    assert exchange["grant_type"] == TOKEN_EXCHANGE
    assert (exchange["audience"], exchange["subject_token_type"]) == (AUDIENCE, JWT)
    assert exchange["subject_token"] == "eyJ.subject-token.from-ci"  # read from the file
    if impersonating:
        assert [t.subject for t in iam.issued.values()] == [TARGET]
        assert [t.scopes for t in iam.issued.values()] == [(CLOUD_PLATFORM,)]
    else:
        assert iam.token_requests == 0
        assert [t.scopes for t in sts.issued.values()] == [(CLOUD_PLATFORM,)]


def test_federation_refused_says_to_check_the_pool_and_the_token(
    sts: FakeSTS, fake_gar: FakeGarFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    fake, _ = gar_trusting(fake_gar, sts)  # the subject token is not one STS accepts
    config = external_account(tmp_path, sts, None)
    answer = pull(proxy, fake, config)
    error = answer.json()["errors"][0]
    assert (answer.status_code, error["code"]) == (403, "DENIED")
    assert "invalid_grant" in error["message"]  # STS's reason
    assert AUDIENCE in error["message"] and str(tmp_path / "oidc-token") in error["message"]
    assert "create a new key" not in error["message"].lower()
    assert fake.count() == 0


def impersonated(tmp_path: Path, oauth: FakeOAuth, iam: FakeIAMCredentials) -> tuple[Path, str]:
    source = oauth.service_account()
    path = tmp_path / "impersonated.json"
    path.write_text(
        json.dumps(
            {
                "type": "impersonated_service_account",
                "service_account_impersonation_url": iam.endpoint(TARGET),
                "source_credentials": source.info,
                "delegates": [],
            }
        )
    )
    return path, source.email


def test_a_pull_with_an_impersonated_service_account(
    oauth: FakeOAuth,
    iam: FakeIAMCredentials,
    fake_gar: FakeGarFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
) -> None:
    path, source = impersonated(tmp_path, oauth, iam)
    iam.allow(source, TARGET)
    fake, image = gar_trusting(fake_gar, iam)  # only the target's tokens
    answer = pull(proxy, fake, path)
    assert answer.status_code == 200, answer.text
    assert answer.content == image.manifest
    assert [t.subject for t in iam.issued.values()] == [TARGET]
    assert [t.scopes for t in iam.issued.values()] == [(CLOUD_PLATFORM,)]
    assert oauth.token_requests == 1  # the source's own token, for the IAM call


def test_impersonation_refused_says_to_grant_token_creator(
    oauth: FakeOAuth,
    iam: FakeIAMCredentials,
    fake_gar: FakeGarFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
) -> None:
    path, _ = impersonated(tmp_path, oauth, iam)  # no grant on TARGET
    fake, _ = gar_trusting(fake_gar, iam)
    answer = pull(proxy, fake, path)
    error = answer.json()["errors"][0]
    assert (answer.status_code, error["code"]) == (403, "DENIED")
    assert "iam.serviceAccounts.getAccessToken" in error["message"]  # IAM's words (R12)
    assert f"roles/iam.serviceAccountTokenCreator on {TARGET}" in error["message"]
    assert "create a new key" not in error["message"].lower()
