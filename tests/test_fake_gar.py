"""The fake GAR itself behaves like a registry: auth, pulls, pushes, faults, the REST API."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import build_artifact, build_image, build_index, make_layer, push_image
from tests.conftest import FakeGarFactory

TOKEN = "ya29.fake-access-token"
READ_ONLY = "ya29.read-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(access_tokens={TOKEN, READ_ONLY}, read_only_tokens={READ_ONLY})


@pytest.fixture
def url(fake: FakeGAR) -> str:
    return fake.url


def _client(**options: Any) -> httpx.Client:
    # Plain HTTP on loopback: skip loading CA certificates (~60 ms per client).
    return httpx.Client(verify=False, **options)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with _client() as client:
        yield client


def _challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def _registry_token(
    http: httpx.Client, challenge: dict[str, str], access_token: str = TOKEN
) -> str:
    reply = http.get(
        challenge["realm"],
        params={"service": challenge["service"], "scope": challenge["scope"]},
        auth=("oauth2accesstoken", access_token),
    )
    assert reply.status_code == 200
    return str(reply.json()["token"])


def test_token_dance_and_scopes(fake: FakeGAR, url: str, http: httpx.Client) -> None:
    fake.registry_token_only = True
    image = build_image([make_layer()])
    fake.put_image("europe-west1", "proj/repo/app", "1.0", image)
    manifest_url = f"{url}/europe-west1/v2/proj/repo/app/manifests/1.0"

    ping = http.get(f"{url}/europe-west1/v2/")
    denied = http.get(manifest_url, headers=AUTH)
    challenge = _challenge(denied)
    bad = http.get(challenge["realm"], auth=("oauth2accesstoken", "nope"))
    token = _registry_token(http, challenge)
    pulled = http.get(manifest_url, headers={"Authorization": f"Bearer {token}"})
    upload = http.post(
        f"{url}/europe-west1/v2/proj/repo/app/blobs/uploads/",
        headers={"Authorization": f"Bearer {token}"},
    )

    assert ping.status_code == 401
    assert ping.headers["docker-distribution-api-version"] == "registry/2.0"
    assert denied.status_code == 401
    assert challenge == {
        "realm": f"{url}/europe-west1/v2/token",
        "service": "europe-west1-docker.pkg.dev",
        "scope": "repository:proj/repo/app:pull",
    }
    assert bad.status_code == 401
    assert pulled.status_code == 200
    assert pulled.content == image.manifest
    assert upload.status_code == 401
    assert _challenge(upload)["scope"] == "repository:proj/repo/app:pull,push"
    assert _challenge(upload)["error"] == "insufficient_scope"
    assert fake.count("GET", "token") == 2


def test_read_only_tokens_may_not_write(fake: FakeGAR, url: str, http: httpx.Client) -> None:
    uploads = f"{url}/us/v2/proj/repo/app/blobs/uploads/"
    challenge = _challenge(http.post(uploads))
    token = _registry_token(http, challenge, READ_ONLY)

    direct = http.post(uploads, headers={"Authorization": f"Bearer {READ_ONLY}"})
    via_token = http.post(uploads, headers={"Authorization": f"Bearer {token}"})

    assert direct.status_code == via_token.status_code == 403
    assert direct.json()["errors"][0]["code"] == "DENIED"
    assert fake.issued_tokens[token].scopes == {"proj/repo/app": frozenset({"pull"})}


def test_pull_an_index_and_ranges(fake: FakeGAR, url: str, http: httpx.Client) -> None:
    amd = build_image([make_layer({"a": b"1"}), make_layer(size=600_000, seed=2)])
    arm = build_image([make_layer({"a": b"2"})], architecture="arm64", variant="v8")
    index = build_index([amd, arm])
    fake.put_image("us", "proj/repo/multi", "latest", index)
    v2 = f"{url}/us/v2/proj/repo/multi"

    with _client(headers=AUTH, follow_redirects=True) as client:
        top = client.get(f"{v2}/manifests/latest", headers={"Accept": mt.OCI_INDEX})
        head = client.head(f"{v2}/manifests/{amd.digest}")
        big = amd.layers[1]
        blob = client.get(f"{v2}/blobs/{big.digest}")
        part = client.get(f"{v2}/blobs/{big.digest}", headers={"Range": "bytes=10-19"})
        beyond = client.get(f"{v2}/blobs/{big.digest}", headers={"Range": f"bytes={big.size}-"})
        missing = client.get(f"{v2}/blobs/sha256:{'0' * 64}")
        default_location = client.head(f"{url}/v2/proj/repo/multi/manifests/latest")

    assert top.headers["content-type"] == mt.OCI_INDEX
    assert top.headers["docker-content-digest"] == index.digest
    assert top.json()["manifests"][1]["platform"] == {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
    }
    assert head.headers["content-length"] == str(len(amd.manifest))
    assert head.content == b""
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == big.digest
    assert (part.status_code, part.content) == (206, big.data[10:20])
    assert part.headers["content-range"] == f"bytes 10-19/{big.size}"
    assert beyond.status_code == 416
    assert missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert default_location.headers["docker-content-digest"] == index.digest
    assert fake.count("GET", "blob") == 4
    assert fake.count("GET", "download") == 3  # each GET that found the blob was sent on
    assert fake.count(kind="manifest", location="us") == 3


def test_blob_gets_go_to_a_signed_download_served_without_credentials(
    fake: FakeGAR, url: str, http: httpx.Client
) -> None:
    data = make_layer(size=100_000, seed=4)
    digest = fake.put_blob("us", "proj/repo/app", data)
    blob_url = f"{url}/us/v2/proj/repo/app/blobs/{digest}"
    with _client(headers=AUTH) as client:
        sent_on = client.get(blob_url)
        head = client.head(blob_url)
    location = sent_on.headers["location"]
    prefix = "/artifacts-downloads/namespaces/proj/repositories/repo/downloads/"
    assert sent_on.status_code == 302 and location.startswith(prefix)
    assert len(location) - len(prefix) >= 1000  # a signature of about 1 KB
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))
    anyone = http.get(f"{url}{location}")  # no Authorization: the path is the credential
    part = http.get(f"{url}{location}", headers={"Range": "bytes=5-9"})
    assert (anyone.status_code, anyone.content) == (200, data)
    assert (part.status_code, part.content) == (206, data[5:10])
    fake.download_ttl = 0
    expired = http.get(f"{url}{http.get(blob_url, headers=AUTH).headers['location']}")
    assert expired.status_code == 403
    assert fake.count("GET", "download") == 3


def test_a_plain_registrys_chunked_upload_then_manifest_put(
    fake_gar: FakeGarFactory, http: httpx.Client
) -> None:
    fake = fake_gar(access_tokens={TOKEN}, plain_uploads=True)
    fake.add_repository("us", "proj", "repo")  # GAR creates none on push
    url = fake.url
    layer = make_layer(size=300_000, seed=5)
    image = build_image([layer])
    v2 = f"{url}/us/v2/proj/repo/pushed"

    with _client(headers=AUTH) as client:
        early = client.put(
            f"{v2}/manifests/v1", content=image.manifest, headers={"Content-Type": image.media_type}
        )
        started = client.post(f"{v2}/blobs/uploads/")
        location = started.url.join(started.headers["location"])
        first = client.patch(
            location, content=layer[:100_000], headers={"Content-Range": "0-99999"}
        )
        location = first.url.join(first.headers["location"])
        skipped = client.patch(
            location, content=layer[200_000:], headers={"Content-Range": f"200000-{len(layer) - 1}"}
        )
        rest = client.patch(location, content=layer[100_000:])
        status = client.get(location)
        done = client.put(location, params={"digest": image.layers[0].digest})
    push_image(f"{url}/us", "proj/repo/pushed", "v1", image, headers=AUTH)

    assert early.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert started.status_code == 202
    assert started.headers["range"] == "0-0"
    assert first.status_code == 202
    assert first.headers["range"] == "0-99999"
    assert skipped.status_code == 416
    assert skipped.headers["range"] == "0-99999"
    assert rest.headers["range"] == f"0-{len(layer) - 1}"
    assert status.status_code == 204
    assert done.status_code == 201
    assert done.headers["docker-content-digest"] == image.layers[0].digest
    assert fake.get_blob("us", "proj/repo/pushed", image.layers[0].digest) == layer
    assert fake.get_manifest("us", "proj/repo/pushed", "v1") == (image.manifest, image.media_type)
    assert fake.count("POST", "upload") == 2  # the config; the layer was already there


def test_gar_upload_sessions_are_opaque_and_take_one_write(
    fake: FakeGAR, url: str, http: httpx.Client
) -> None:
    layer = make_layer(size=50_000, seed=6)
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    fake.add_repository("us", "proj", "repo")  # GAR creates none on push
    uploads = f"{url}/us/v2/proj/repo/gar/blobs/uploads/"
    prefix = "/artifacts-uploads/namespaces/proj/repositories/repo/uploads/"

    started = http.post(uploads, headers=AUTH)
    location = started.headers["location"]
    whole = http.patch(f"{url}{location}", content=layer)  # no Authorization needed
    again = http.patch(f"{url}{location}", content=b"more")
    done = http.put(f"{url}{location}", params={"digest": digest})
    assert started.status_code == 202 and location.startswith(prefix)
    assert len(location) - len(prefix) >= 600
    assert (whole.status_code, whole.headers["range"]) == (202, f"0-{len(layer) - 1}")
    assert (again.status_code, again.json()["errors"][0]["code"]) == (400, "BLOB_UPLOAD_INVALID")
    assert done.status_code == 201 and fake.get_blob("us", "proj/repo/gar", digest) == layer
    assert fake.writes() == 2 and fake.writes(digest) == 2  # the refused one is counted too
    assert [w.accepted for w in fake.upload_writes] == [True, False]

    fake.reset_counts()
    fake.upload_session_form = "pkg"
    location = http.post(uploads, headers=AUTH).headers["location"]
    assert location.startswith("/us/v2/proj/repo/pkg/blobs/uploads/")
    one = http.put(f"{url}{location}", params={"digest": digest}, content=layer)
    assert one.status_code == 201 and fake.writes(digest) == 1

    location = http.post(uploads, headers=AUTH).headers["location"]
    assert fake.expire_upload_sessions() == 1
    gone = http.put(f"{url}{location}", params={"digest": digest}, content=layer)
    assert (gone.status_code, gone.json()["errors"][0]["code"]) == (404, "BLOB_UPLOAD_UNKNOWN")


def test_mounts_stay_within_a_project(fake: FakeGAR, url: str, http: httpx.Client) -> None:
    digest = fake.put_blob("us", "proj/repo/source", b"shared layer")
    fake.add_repository("us", "proj", "other")
    fake.add_repository("us", "elsewhere", "repo")
    uploads = "blobs/uploads/"

    same = http.post(
        f"{url}/us/v2/proj/other/dest/{uploads}",
        params={"mount": digest, "from": "proj/repo/source"},
        headers=AUTH,
    )
    cross = http.post(
        f"{url}/us/v2/elsewhere/repo/dest/{uploads}",
        params={"mount": digest, "from": "proj/repo/source"},
        headers=AUTH,
    )

    assert same.status_code == 201
    assert same.headers["location"] == f"/us/v2/proj/other/dest/blobs/{digest}"
    assert cross.status_code == 202
    assert fake.get_blob("us", "elsewhere/repo/dest", digest) is None


def test_tags_referrers_and_metadata(fake: FakeGAR, url: str, http: httpx.Client) -> None:
    image = build_image([make_layer()])
    for tag in ("a", "b", "c"):
        fake.put_image("us", "proj/repo/app", tag, image)
    sbom = build_artifact(image, "application/spdx+json", b"{}")
    fake.put_image("us", "proj/repo/app", None, sbom)
    fake.add_repository("us", "proj", "second", {"keep": {"id": "keep", "action": "KEEP"}})

    with _client(headers=AUTH) as client:
        page = client.get(f"{url}/us/v2/proj/repo/app/tags/list", params={"n": 2})
        whole = client.get(f"{url}/us/v2/proj/repo/app/tags/list")
        referrers = client.get(
            f"{url}/us/v2/proj/repo/app/referrers/{image.digest}",
            params={"artifactType": "application/spdx+json"},
        )
        repos = client.get(
            f"{url}/v1/projects/proj/locations/us/repositories", params={"pageSize": 1}
        )
        second = client.get(
            f"{url}/v1/projects/proj/locations/us/repositories",
            params={"pageSize": 1, "pageToken": repos.json()["nextPageToken"]},
        )
        absent = client.get(f"{url}/v1/projects/proj/locations/eu/repositories/nope")
    unauthenticated = http.get(f"{url}/v1/projects/proj/locations")

    listed = whole.json()  # GCR-shaped (docs/GAR.md N3)
    assert (listed["name"], listed["tags"], listed["child"]) == (
        "proj/repo/app",
        ["a", "b", "c"],
        [],
    )
    assert page.json()["tags"] == ["a", "b"]
    assert page.json()["manifest"][image.digest]["tag"] == ["a", "b"]
    entry = listed["manifest"][image.digest]
    assert entry["tag"] == ["a", "b", "c"]
    assert entry["mediaType"] == image.media_type
    assert int(entry["imageSizeBytes"]) == len(image.manifest) + sum(b.size for b in image.blobs)
    assert isinstance(entry["timeUploadedMs"], int) and entry["timeCreatedMs"].isdigit()
    assert listed["manifest"][sbom.digest]["tag"] == []
    assert page.headers["link"] == '</us/v2/proj/repo/app/tags/list?n=2&last=b>; rel="next"'
    assert referrers.headers["oci-filters-applied"] == "artifactType"
    assert [m["digest"] for m in referrers.json()["manifests"]] == [sbom.digest]
    assert repos.json()["repositories"][0]["name"] == "projects/proj/locations/us/repositories/repo"
    assert second.json()["repositories"][0]["cleanupPolicies"]["keep"]["action"] == "KEEP"
    assert "nextPageToken" not in second.json()
    assert absent.status_code == 404
    assert unauthenticated.status_code == 401
    assert fake.count(kind="metadata") == 4
    assert fake.count("GET", "tags") == 2


def test_faults(fake: FakeGAR, url: str, http: httpx.Client) -> None:
    blob = make_layer(size=1_000_000, seed=9)
    digest = fake.put_blob("us", "proj/repo/app", blob)
    blob_url = f"{url}/us/v2/proj/repo/app/blobs/{digest}"
    fake.add_fault(Fault(kind="blob", status=429, retry_after=2, times=1))
    truncate = fake.add_fault(Fault(kind="blob", truncate_at=1000, times=1))
    fake.add_fault(Fault(method="GET", path=r"/blobs/", corrupt=True, times=1))

    with _client(headers=AUTH, follow_redirects=True) as client:
        limited = client.get(blob_url)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(blob_url)
        corrupted = client.get(blob_url)
        healthy = client.get(blob_url)
    fake.add_fault(Fault(kind="manifest", reset=True))
    with pytest.raises(httpx.TransportError):
        http.get(f"{url}/us/v2/proj/repo/app/manifests/x", headers=AUTH)

    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert truncate.hits == 1
    assert len(corrupted.content) == len(blob)
    assert corrupted.content != blob
    assert healthy.content == blob
    assert fake.count("GET", "blob") == 4
