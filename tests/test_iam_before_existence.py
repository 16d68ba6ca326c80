"""GAR's IAM answers before it looks (docs/GAR.md A7-A10, R4), through the proxy.

A principal with grants on some repositories gets 403 "(or it may not exist)" for any
repository it cannot see; a project-wide one gets 404 ``Repository "R" not found``. The
client reads GAR's words, also when the answer comes from the negative cache; location
discovery goes on past other locations' 403s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR, Principal
from testkit.fakes.google import FakeOAuth
from testkit.fakes.google_sts import IssuedTokens
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
SCOPED = "scoped@proj.iam.gserviceaccount.com"
PROJECT = "project-wide@proj.iam.gserviceaccount.com"
OWNER = "owner@proj.iam.gserviceaccount.com"
DOWNLOAD_DENIED = (
    'Permission "artifactregistry.repositories.downloadArtifacts" denied on resource '
    '"projects/proj/locations/{location}/repositories/{repository}" (or it may not exist)'
)


class PrincipalsByAccount(dict[str, Principal]):
    """``FakeGAR.principals`` for tokens google-auth obtained: by the account they are for."""

    def __init__(self, oauth: FakeOAuth, accounts: dict[str, Principal]) -> None:
        super().__init__()
        self.oauth, self.accounts = oauth, accounts

    def get(self, token: str, default: Principal | None = None) -> Principal | None:  # type: ignore[override]
        issued = self.oauth.issued.get(token)
        return self.accounts.get(issued.subject, default) if issued else default


@pytest.fixture
def oauth() -> Iterator[FakeOAuth]:
    issuer = FakeOAuth()
    with issuer.serving():
        yield issuer


@pytest.fixture
def fake(fake_gar: FakeGarFactory, oauth: FakeOAuth) -> FakeGAR:
    fake = fake_gar(auth="gcp")
    fake.access_tokens = IssuedTokens(oauth)
    fake.principals = PrincipalsByAccount(
        oauth,
        {
            SCOPED: Principal.on_repositories(("europe-west1", "proj", "repo")),
            PROJECT: Principal.project_wide("proj"),
        },
    )  # fmt: skip  (OWNER: no principal of its own, an owner)
    fake.put_image("europe-west1", "proj/repo/app", "1.0", build_image([make_layer(seed=7)]))
    return fake


@pytest.fixture
def acting_as(
    fake: FakeGAR, oauth: FakeOAuth, proxy: ProxyFactory, tmp_path: Path
) -> Callable[..., RunningProxy]:
    """``acting_as(ACCOUNT, **settings)``: the proxy with ACCOUNT's key (google-auth's
    real JWT grant against the fake OAuth endpoint; REST calls carry its token too)."""

    def start(account: str, **keys: str) -> RunningProxy:
        key = tmp_path / f"{account}.json"
        key.write_text(json.dumps(oauth.service_account(account).info))
        return proxy(fake.upstream, auth="gcp", gcp__credentials_file=str(key), **keys)

    return start


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    first = response.json()["errors"][0]
    return response.status_code, first["code"], first["message"]


def test_a_scoped_principal_gets_gars_403_for_a_missing_repository(
    fake: FakeGAR, acting_as: Callable[..., RunningProxy]
) -> None:
    running = acting_as(SCOPED, routing__location="europe-west1")
    with httpx.Client(base_url=running.url, timeout=30) as http:
        first = http.get("/v2/proj/missing/app/manifests/1.0", headers=ACCEPT)
        asked = fake.count("GET", "manifest")
        again = http.get("/v2/proj/missing/app/manifests/1.0", headers=ACCEPT)
        replayed = fake.count("GET", "manifest") == asked  # from the negative cache
        mine = http.get("/v2/proj/repo/app/manifests/1.0", headers=ACCEPT)
    gars = DOWNLOAD_DENIED.format(location="europe-west1", repository="missing")
    assert error_of(first)[:2] == (403, "DENIED") and gars in error_of(first)[2]
    assert error_of(again) == error_of(first)  # replayed in GAR's words
    assert replayed
    assert mine.status_code == 200


def test_a_project_wide_principal_gets_404_and_it_is_replayed_with_gars_words(
    fake: FakeGAR, acting_as: Callable[..., RunningProxy]
) -> None:
    running = acting_as(PROJECT)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        first = http.get("/v2/proj/missing/app/manifests/1.0", headers=ACCEPT)
        again = http.get("/v2/proj/missing/app/manifests/1.0", headers=ACCEPT)
    assert error_of(first)[:2] == (404, "NAME_UNKNOWN")
    assert 'Repository "missing" not found' in error_of(first)[2]
    assert error_of(again) == error_of(first)
    assert fake.count("GET", "manifest") == 1


def test_a_push_to_a_missing_repository_says_so(
    fake: FakeGAR, acting_as: Callable[..., RunningProxy]
) -> None:
    running = acting_as(OWNER)
    with httpx.Client(base_url=running.url, timeout=30) as http:
        started = http.post("/v2/proj/new/app/blobs/uploads/")
    assert error_of(started)[:2] == (404, "NAME_UNKNOWN")
    assert 'Repository "new" not found' in error_of(started)[2]
    assert ("us", "proj", "new") not in fake.repositories  # GAR creates none (A9)


def test_a_push_with_a_read_grant_says_upload_denied(
    fake: FakeGAR, acting_as: Callable[..., RunningProxy]
) -> None:
    running = acting_as(PROJECT, routing__location="europe-west1")
    with httpx.Client(base_url=running.url, timeout=30) as http:
        started = http.post("/v2/proj/repo/app/blobs/uploads/")
    status, code, message = error_of(started)
    assert (status, code) == (403, "DENIED")
    assert '"artifactregistry.repositories.uploadArtifacts" denied' in message


def test_discovery_goes_past_403s_in_other_locations(
    fake: FakeGAR, acting_as: Callable[..., RunningProxy]
) -> None:
    """The scoped principal may read only europe-west1/repo: every other location's REST
    API answers 403 (R4), which used to end the search and send the pull to ``us``."""
    running = acting_as(
        SCOPED,
        routing__resolve_locations="true", apis__artifact_registry=fake.url,
    )  # fmt: skip
    with httpx.Client(base_url=running.url, timeout=30) as http:
        pulled = http.get("/v2/proj/repo/app/manifests/1.0", headers=ACCEPT)
    assert pulled.status_code == 200, pulled.text
    assert fake.count("GET", "manifest", location="europe-west1") == 1
    assert fake.count("GET", "manifest", location="us") == 0


def test_403_everywhere_is_reported_with_gars_words(
    fake: FakeGAR, acting_as: Callable[..., RunningProxy], caplog: pytest.LogCaptureFixture
) -> None:
    running = acting_as(
        SCOPED,
        routing__resolve_locations="true", apis__artifact_registry=fake.url,
    )  # fmt: skip
    with httpx.Client(base_url=running.url, timeout=30) as http:
        answer = http.get("/v2/proj/typo/app/manifests/1.0", headers=ACCEPT)
    assert error_of(answer)[:2] == (403, "DENIED")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    report = next(w for w in warnings if "denied gar-proxy proj/typo" in w)
    assert "artifactregistry.repositories.get" in report and "routing.routes" in report


def test_the_one_location_that_refuses_is_the_repositorys(
    fake: FakeGAR, acting_as: Callable[..., RunningProxy]
) -> None:
    """A project-wide reader denied one repository (an IAM deny policy): every other
    location says 404, so the one that said 403 holds it; the pull goes there and the
    client reads GAR's refusal for it, not a 404 from ``us``."""
    key = ("europe-west1", "proj", "repo")
    assert isinstance(fake.principals, PrincipalsByAccount)
    fake.principals.accounts[PROJECT] = Principal(
        "denied-one", {"proj": frozenset({"read"})}, denied=frozenset({key})
    )
    running = acting_as(
        PROJECT,
        routing__resolve_locations="true", apis__artifact_registry=fake.url,
    )  # fmt: skip
    with httpx.Client(base_url=running.url, timeout=30) as http:
        answer = http.get("/v2/proj/repo/app/manifests/1.0", headers=ACCEPT)
    assert error_of(answer)[:2] == (403, "DENIED")
    assert DOWNLOAD_DENIED.format(location="europe-west1", repository="repo") in error_of(answer)[2]
    assert fake.count("GET", "manifest", location="us") == 0
