"""The fake GAR's defaults are what docs/GAR.md records GAR doing, row by row.

Every row of ``docs/GAR.md`` that names fake code has a check here, run against a fake
with no knobs turned (only tokens given): if the fake drifts from the record, or a row
is added without a check, a test fails. The record itself is checked too: every row
has a source, and the fake code it names exists.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR, Principal
from testkit.fakes.gar_analysis import FakeAnalysis
from testkit.fakes.gar_iam import CLOUD_PLATFORM, CLOUD_PLATFORM_READ_ONLY
from testkit.images import build_image, make_layer
from testkit.schema1 import build_schema1
from testkit.servers import serve_in_thread

RECORD = Path(__file__).parent.parent / "docs" / "GAR.md"
CELL = r" \| (.*?)"
ROW = re.compile(rf"^\| (?P<id>[A-Z]\d+){CELL}{CELL}{CELL}{CELL} \|$")
OWNER = "ya29.owner"
SCOPED = "ya29.scoped"
PROJECT = "ya29.project-reader"
NARROW = "ya29.read-only-scope"
WIDE = "ya29.cloud-platform-scope"
SCOPES = {NARROW: (CLOUD_PLATFORM_READ_ONLY,), WIDE: (CLOUD_PLATFORM,)}
IAM_TEXT = re.compile(
    r'^Permission "artifactregistry\.repositories\.(download|upload)Artifacts" denied on '
    r'resource "projects/[^/]+/locations/[^/]+/repositories/[^/]+" \(or it may not exist\)$'
)


def rows() -> list[dict[str, str]]:
    """docs/GAR.md's rows: id, does, source, fake, held."""
    found = [ROW.match(line) for line in RECORD.read_text().splitlines()]
    names = ("does", "source", "fake", "held")
    return [{"id": m["id"], **dict(zip(names, m.groups()[1:], strict=True))} for m in found if m]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGAR]:
    fake = FakeGAR(access_tokens={OWNER, NARROW}, token_scopes=SCOPES.get)  # no other knob
    fake.grant(SCOPED, Principal.on_repositories(("us", "proj", "granted")))
    fake.grant(PROJECT, Principal.project_wide("proj"))
    fake.put_image("us", "proj/granted/app", "1", build_image([make_layer(seed=1)]))
    fake.put_image("us", "proj/repo/app", "1", build_image([make_layer(seed=2)]))
    with fake.serve():
        yield fake


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(verify=False, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def oci_error(response: httpx.Response) -> tuple[int, str, str]:
    first = response.json()["errors"][0]
    return response.status_code, first["code"], first["message"]


def google_reason(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    reason = next((d.get("reason") for d in error.get("details", [])), None)
    return error["code"], error["status"], reason


# --------------------------------------------------------------------------- checks


def a1(fake: FakeGAR, http: httpx.Client) -> None:
    challenge = http.get(f"{fake.url}/us/v2/").headers["www-authenticate"]
    assert challenge == f'Bearer realm="{fake.url}/us/v2/token"'


def a3(fake: FakeGAR, http: httpx.Client) -> None:
    token = f"{fake.url}/us/v2/token"
    params = {"scope": "repository:proj/repo/app:pull"}
    fake.json_keys["key-1"] = OWNER
    key = json.dumps({"type": "service_account", "private_key_id": "key-1"})
    logins = [
        ("oauth2accesstoken", OWNER),
        ("_token", OWNER),
        ("_json_key", key),
        ("_json_key_base64", base64.b64encode(key.encode()).decode()),
    ]
    for user, secret in logins:
        assert http.get(token, params=params, headers=basic(user, secret)).status_code == 200, user


def a4(fake: FakeGAR, http: httpx.Client) -> None:
    answer = http.get(f"{fake.url}/us/v2/token", params={"scope": "repository:proj/repo/app:pull"})
    assert answer.status_code == 403


def a5(fake: FakeGAR, http: httpx.Client) -> None:
    for repository in ("repo", "missing"):  # existing or not, the same words
        answer = http.get(
            f"{fake.url}/us/v2/token",
            params={"scope": f"repository:proj/{repository}/app:pull"},
            headers=basic("oauth2accesstoken", SCOPED),
        )
        status, code, message = oci_error(answer)
        assert (status, code) == (403, "DENIED") and IAM_TEXT.match(message), message


def a6(fake: FakeGAR, http: httpx.Client) -> None:
    answer = http.get(f"{fake.url}/us/v2/token", headers=basic("oauth2accesstoken", "ya29.bad"))
    assert answer.status_code == 401


def a7(fake: FakeGAR, http: httpx.Client) -> None:
    for path in ("proj/repo/app", "proj/missing/app"):
        answer = http.get(f"{fake.url}/us/v2/{path}/manifests/1", headers=bearer(SCOPED))
        status, code, message = oci_error(answer)
        assert (status, code) == (403, "DENIED") and "downloadArtifacts" in message
        assert IAM_TEXT.match(message)
    push = http.post(f"{fake.url}/us/v2/proj/repo/app/blobs/uploads/", headers=bearer(PROJECT))
    assert "uploadArtifacts" in oci_error(push)[2]


def a8(fake: FakeGAR, http: httpx.Client) -> None:
    answer = http.get(f"{fake.url}/us/v2/proj/missing/app/manifests/1", headers=bearer(PROJECT))
    assert oci_error(answer) == (404, "NAME_UNKNOWN", 'Repository "missing" not found')


def a9(fake: FakeGAR, http: httpx.Client) -> None:
    image = build_image([make_layer(seed=3)])
    answer = http.put(
        f"{fake.url}/us/v2/proj/new/app/manifests/1",
        content=image.manifest,
        headers={**bearer(OWNER), "Content-Type": image.media_type},
    )
    assert oci_error(answer)[:2] == (404, "NAME_UNKNOWN")
    assert ("us", "proj", "new") not in fake.repositories


def n1_n2(fake: FakeGAR, http: httpx.Client) -> None:
    layer = make_layer(seed=4)
    fake.put_blob("us", "proj/repo/old", layer)
    signed = build_schema1("proj/repo/old", "v1", [layer])
    answer = http.put(
        f"{fake.url}/us/v2/proj/repo/old/manifests/v1",
        content=signed.manifest,
        headers={**bearer(OWNER), "Content-Type": mt.DOCKER_MANIFEST_V1_SIGNED},
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["docker-content-digest"] == signed.canonical_digest  # N2
    assert signed.canonical_digest != signed.raw_digest


def n3(fake: FakeGAR, http: httpx.Client) -> None:
    listed = http.get(f"{fake.url}/us/v2/proj/repo/app/tags/list", headers=bearer(OWNER)).json()
    assert set(listed) == {"child", "manifest", "name", "tags"}
    entry = next(iter(listed["manifest"].values()))
    assert set(entry) >= {"imageSizeBytes", "mediaType", "tag", "timeCreatedMs", "timeUploadedMs"}
    assert isinstance(entry["imageSizeBytes"], str) and isinstance(entry["timeUploadedMs"], int)


def n4(fake: FakeGAR, http: httpx.Client) -> None:
    assert FakeGAR().tag_list_limit == 10_000


def n5(fake: FakeGAR, http: httpx.Client) -> None:
    fake.put_image("us", "example.com/proj/repo/app", "1", build_image([make_layer(seed=5)]))
    assert ("us", "example.com:proj", "repo") in fake.repositories
    got = http.get(
        f"{fake.url}/v1/projects/example.com:proj/locations/us/repositories/repo",
        headers=bearer(OWNER),
    )
    assert got.json()["name"] == "projects/example.com:proj/locations/us/repositories/repo"


def n6(fake: FakeGAR, http: httpx.Client) -> None:
    answer = http.get(f"{fake.url}/rep/us/v2/proj/repo/app/manifests/1", headers=bearer(OWNER))
    assert answer.status_code == 200
    assert fake.requests[-1].regional


def r1_r4(fake: FakeGAR, http: httpx.Client) -> None:
    for repository in ("repo", "missing"):
        url = f"{fake.url}/v1/projects/proj/locations/us/repositories/{repository}"
        answer = http.get(url, headers=bearer(SCOPED))
        assert google_reason(answer) == (403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED")
        assert answer.json()["error"]["message"].startswith(
            "Permission 'artifactregistry.repositories.get' denied on resource "
            f"'//artifactregistry.googleapis.com/projects/proj/locations/us/repositories/{repository}'"
        )


def r2(fake: FakeGAR, http: httpx.Client) -> None:
    fake.disabled_apis.add("artifactregistry.googleapis.com")
    try:
        answer = http.get(f"{fake.url}/v1/projects/proj/locations", headers=bearer(OWNER))
    finally:
        fake.disabled_apis.clear()
    assert google_reason(answer) == (403, "PERMISSION_DENIED", "SERVICE_DISABLED")
    assert "has not been used in project proj before or it is disabled" in answer.text


def r3_r6(fake: FakeGAR, http: httpx.Client) -> None:
    analysis = FakeAnalysis(access_tokens={OWNER, NARROW, WIDE}, scopes=SCOPES.get)
    url = "https://us-docker.pkg.dev/proj/repo/app@sha256:" + "0" * 64
    params = {"filter": f'resourceUrl="{url}" AND kind="VULNERABILITY"'}
    with serve_in_thread(analysis.in_front_of(fake)) as base:
        narrow = http.get(
            f"{base}/v1/projects/proj/occurrences", params=params, headers=bearer(NARROW)
        )
        full = http.get(f"{base}/v1/projects/proj/occurrences", params=params, headers=bearer(WIDE))
        registry_api = http.get(f"{base}/v1/projects/proj/locations", headers=bearer(NARROW))
    assert google_reason(narrow) == (403, "PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
    assert full.status_code == 200  # a token with cloud-platform itself is taken
    assert registry_api.status_code == 200  # R6: Artifact Registry reads take read-only


def r5(fake: FakeGAR, http: httpx.Client) -> None:
    url = f"{fake.url}/v1/projects/proj/locations/us/repositories/missing"
    assert google_reason(http.get(url, headers=bearer(OWNER)))[:2] == (404, "NOT_FOUND")


def r7(fake: FakeGAR, http: httpx.Client) -> None:
    fake.add_repository("us", "proj", "policies", cleanup_policies={})
    url = f"{fake.url}/v1/projects/proj/locations/us/repositories/policies"
    assert "cleanupPolicyDryRun" not in http.get(url, headers=bearer(OWNER)).json()
    fake.repositories[("us", "proj", "policies")].cleanup_policy_dry_run = True
    assert http.get(url, headers=bearer(OWNER)).json()["cleanupPolicyDryRun"] is True


def r14(fake: FakeGAR, http: httpx.Client) -> None:
    fake.add_repository("us", "proj", "pinned")
    url = f"{fake.url}/v1/projects/proj/locations/us/repositories/pinned"
    assert "dockerConfig" not in http.get(url, headers=bearer(OWNER)).json()
    fake.repositories[("us", "proj", "pinned")].immutable_tags = True
    assert http.get(url, headers=bearer(OWNER)).json()["dockerConfig"] == {"immutableTags": True}


def u1_u3_u5_u7(fake: FakeGAR, http: httpx.Client) -> None:
    data = make_layer(size=5000, seed=9)
    start = http.post(f"{fake.url}/us/v2/proj/repo/app/blobs/uploads/", headers=bearer(OWNER))
    location = start.headers["location"]
    prefix = "/artifacts-uploads/namespaces/proj/repositories/repo/uploads/"
    assert start.status_code == 202 and location.startswith(prefix)  # U1: relative, outside /v2/
    assert len(location) - len(prefix) >= 200  # U1: a long opaque string
    first = http.patch(f"{fake.url}{location}", content=data)  # U3: no Authorization
    second = http.patch(f"{fake.url}{location}", content=data)  # U5: one write a session
    assert first.status_code == 202
    assert oci_error(second)[:2] == (400, "BLOB_UPLOAD_INVALID")  # U7's default
    chunk = http.post(f"{fake.url}/us/v2/proj/repo/app/blobs/uploads/", headers=bearer(OWNER))
    ranged = http.patch(
        f"{fake.url}{chunk.headers['location']}",
        content=data[1000:],
        headers={"Content-Range": f"1000-{len(data) - 1}"},
    )
    assert ranged.status_code == 416  # U5: no chunked uploads


def d1_d4(fake: FakeGAR, http: httpx.Client) -> None:
    data = make_layer(size=20_000, seed=10)
    digest = fake.put_blob("us", "proj/repo/app", data)
    sent_on = http.get(f"{fake.url}/us/v2/proj/repo/app/blobs/{digest}", headers=bearer(OWNER))
    location = sent_on.headers["location"]
    prefix = "/artifacts-downloads/namespaces/proj/repositories/repo/downloads/"
    assert sent_on.status_code == 302 and location.startswith(prefix)  # D1: relative
    assert len(location) - len(prefix) >= 1000  # D1: a signature of about 1 KB
    anyone = http.get(f"{fake.url}{location}")  # D1: no Authorization needed
    part = http.get(f"{fake.url}{location}", headers={"Range": "bytes=10-19"})
    assert (anyone.status_code, anyone.content) == (200, data)
    assert (part.status_code, part.content) == (206, data[10:20])  # D4: single ranges


CHECKS: dict[str, Callable[[FakeGAR, httpx.Client], None]] = {
    "A1": a1, "A3": a3, "A4": a4, "A5": a5, "A6": a6, "A7": a7, "A8": a8, "A9": a9,
    "A10": a7, "A11": a8, "N1": n1_n2, "N2": n1_n2, "N3": n3, "N4": n4, "N5": n5, "N6": n6,
    "N7": n5, "R1": r1_r4, "R2": r2, "R3": r3_r6, "R4": r1_r4, "R5": r5, "R6": r3_r6,
    "R7": r7, "R14": r14, "U1": u1_u3_u5_u7, "U3": u1_u3_u5_u7, "U5": u1_u3_u5_u7,
    "U7": u1_u3_u5_u7, "D1": d1_d4, "D4": d1_d4,
}  # fmt: skip
# Rows whose fake code is not a registry answer a default fake gives (credentials
# fakes, the preview's semantics), held by their own tests instead.
# N8 (referrers pages) is a knob; its tests follow the proxy's Links.
# Upload and download rows whose fake code is a knob (another host, an expiry, a cut, a
# refused mount) or whose point is what the proxy does, and the quota rows (the fake
# enforces no quota), are held by the proxy's own tests named in the row.
# A12, A13, U13 and D6 are open behaviours the GAR twin tries every answer of (tests/twin/).
ELSEWHERE = {"A2", "R8", "R9", "R10", "R11", "R12", "R13", "U2", "U4", "U6", "U8", "U9", "U10",
             "U11", "U12", "U13", "D2", "D3", "D5", "D6", "A12", "A13", "Q1", "Q2",
             "Q3", "N8"}  # fmt: skip


@pytest.mark.parametrize("row", sorted(CHECKS))
def test_default_fake_follows_the_record(row: str, fake: FakeGAR, http: httpx.Client) -> None:
    CHECKS[row](fake, http)


def test_every_row_has_a_check_or_says_where_it_is_held() -> None:
    recorded = {row["id"] for row in rows()}
    assert recorded == set(CHECKS) | ELSEWHERE


def test_every_row_names_its_source_and_real_fake_code() -> None:
    for row in rows():
        assert row["source"].strip() not in ("", "-", "—"), row["id"]
        assert "http" in row["source"] or "/" in row["source"], row["id"]
        for module, name in re.findall(r"`(\w+)\.py:([\w.]+)", row["fake"]):
            target: object = importlib.import_module(f"testkit.fakes.{module}")
            for part in name.split("."):
                target = getattr(target, part)  # AttributeError: the row names no code


def test_every_row_is_held_by_tests_that_exist() -> None:
    root = RECORD.parent.parent
    for row in rows():
        named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", row["held"])
        assert named, f"{row['id']} names no test"
        for path, test in named:
            source = (root / path).read_text()  # FileNotFoundError: no such test file
            assert not test or f"def {test}(" in source, f"{row['id']}: {path}::{test}"
