"""Push-through against the fake GAR: uploads, resume, mounts, manifests, bad input, CLI.

The fake is GAR-shaped (``testkit/fakes/gar_uploads.py``): upload sessions outside
``/v2/<name>/`` that take one write. Every test asserts what reached "GAR"
(``fake.count``, ``fake.writes``, ``fake.get_blob``) as well as what the client saw.
The one-write guarantee for every client pattern is ``test_push_one_write.py``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.cli import main as cli_main
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import (
    build_artifact,
    build_image,
    build_index,
    make_layer,
    push_image,
    write_oci_layout,
)
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
UPLOADS = f"/v2/{REPO}/blobs/uploads/"
TOKEN = "ya29.push-tests"


def blob(size: int, seed: int = 0) -> tuple[bytes, str]:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def cached(running: RunningProxy, digest: str) -> int | None:
    return running.services.cache.size(Digest.parse(digest))


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    fake = fake_gar(auth="none")
    for project, repository in (("proj", "repo"), ("proj", "src"), ("other", "src")):
        fake.add_repository("us", project, repository)
    return fake


@pytest.fixture
def running(fake: FakeGAR, proxy: ProxyFactory) -> RunningProxy:
    return proxy(fake.upstream)


@pytest.fixture
def client(running: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as http:
        yield http


def patch(client: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    headers = {"Content-Range": f"{start}-{start + len(data) - 1}"}
    return client.patch(location, content=data, headers=headers)


# --------------------------------------------------------------------------- uploads


def test_monolithic_upload_lands_upstream_and_in_the_cache(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(5000)
    answer = client.post(UPLOADS, params={"digest": digest}, content=data)
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/v2/{REPO}/blobs/{digest}"
    assert answer.headers["docker-content-digest"] == digest
    assert fake.get_blob("us", REPO, digest) == data
    assert cached(running, digest) == len(data)


def test_chunked_upload_reports_progress_and_pulls_back_from_the_cache(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(3000, seed=1)
    started = client.post(UPLOADS)
    assert started.status_code == 202
    assert started.headers["range"] == "0-0"
    location = started.headers["location"]
    upload_id = location.rsplit("/", 1)[1]
    assert location == f"/v2/{REPO}/blobs/uploads/{upload_id}"
    assert started.headers["docker-upload-uuid"] == upload_id
    for start in (0, 1000, 2000):
        answer = patch(client, location, data[start : start + 1000], start)
        assert answer.status_code == 202, answer.text
        assert answer.headers["range"] == f"0-{start + 999}"
        location = answer.headers["location"]
    progress = client.get(location)
    assert (progress.status_code, progress.headers["range"]) == (204, "0-2999")
    assert progress.headers["docker-upload-uuid"] == upload_id
    assert fake.count("PATCH", "upload") == 0  # chunks wait here: GAR takes one write
    done = client.put(location, params={"digest": digest})
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes() == fake.writes(digest) == 1
    fake.reset_counts()
    assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data
    assert fake.count("GET", "blob") == 0
    assert client.get(location).status_code == 404  # the session is over


def test_an_upload_can_start_without_the_trailing_slash(
    fake: FakeGAR, client: httpx.Client
) -> None:
    data, digest = blob(2000, seed=10)
    started = client.post(UPLOADS.rstrip("/"))
    assert started.status_code == 202, started.text
    location = started.headers["location"]
    assert location.startswith(UPLOADS)
    done = client.put(location, params={"digest": digest}, content=data)
    assert done.status_code == 201, done.text
    whole = client.post(UPLOADS.rstrip("/"), params={"digest": digest}, content=data)
    assert whole.status_code == 201, whole.text
    assert fake.get_blob("us", REPO, digest) == data


def test_upstream_minimum_chunk_size_is_passed_on(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    assert "oci-chunk-min-length" not in client.post(UPLOADS).headers  # none upstream
    fake.upload_chunk_min_length = 5 * 1024 * 1024
    started = client.post(UPLOADS)
    assert started.headers["oci-chunk-min-length"] == str(5 * 1024 * 1024)
    data, _ = blob(1000, seed=9)
    answer = patch(client, started.headers["location"], data, 0)
    assert answer.status_code == 202, answer.text
    assert answer.headers["oci-chunk-min-length"] == str(5 * 1024 * 1024)


def test_streamed_chunk_then_put_with_the_last_chunk(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(300_000, seed=2)

    def stream() -> Iterator[bytes]:  # no Content-Length: chunked transfer, as docker sends
        for offset in range(0, 200_000, 50_000):
            yield data[offset : offset + 50_000]

    location = client.post(UPLOADS).headers["location"]
    answer = client.patch(location, content=stream())
    assert answer.status_code == 202, answer.text
    assert answer.headers["range"] == "0-199999"
    done = client.put(answer.headers["location"], params={"digest": digest}, content=data[200_000:])
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert cached(running, digest) == len(data)
    # The streamed PATCH went up as it came (it might have been the whole blob); the
    # blob itself landed in one write to a fresh session, from the spool and the PUT.
    assert fake.writes(digest) == 1 and fake.count("POST", "upload") == 2


def test_out_of_order_chunk_gets_416_then_the_upload_resumes(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(2000, seed=3)
    location = patch(client, client.post(UPLOADS).headers["location"], data[:1000], 0).headers[
        "location"
    ]
    skipped = patch(client, location, data[1500:], 1500)
    assert skipped.status_code == 416
    assert code(skipped) == "RANGE_INVALID"
    assert skipped.headers["range"] == "0-999"
    assert skipped.headers["location"].endswith(location.rsplit("/", 1)[1])
    assert fake.count("PATCH", "upload") == 0  # chunks stay here until the PUT
    resumed = patch(client, location, data[1000:], 1000)
    assert resumed.status_code == 202
    assert client.put(location, params={"digest": digest}).status_code == 201
    assert fake.get_blob("us", REPO, digest) == data


def test_an_upstream_failure_at_the_end_is_retried_on_a_fresh_session(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(3000, seed=12)
    location = client.post(UPLOADS).headers["location"]
    location = patch(client, location, data[:1000], 0).headers["location"]
    location = patch(client, location, data[1000:], 1000).headers["location"]
    fake.add_fault(Fault(method="PUT", kind="upload", status=503, times=1))
    done = client.put(location, params={"digest": digest})
    assert done.status_code == 201, done.text
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.count("POST", "upload") == 2  # the session at POST, and a fresh one
    assert fake.writes(digest) == 1
    assert cached(running, digest) == len(data)


def test_cancelled_upload_is_gone_here_and_upstream(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    location = client.post(UPLOADS).headers["location"]
    location = patch(client, location, b"abc", 0).headers["location"]
    assert client.delete(location).status_code == 204
    assert fake.writes() == 0
    assert fake.count("DELETE", "upload") == 1
    assert code(client.get(location)) == "BLOB_UPLOAD_UNKNOWN"
    assert list((running.settings.cache.dir / "uploads").iterdir()) == []


def test_upload_survives_a_proxy_restart_between_chunks(tmp_path: Path) -> None:
    """Token auth upstream (the registry-token dance): the restarted proxy must learn it
    before streaming a chunk it cannot replay, and rebuild the hash from the teed bytes."""
    fake = FakeGAR(auth="gcp", access_tokens={TOKEN}, absolute_locations=True)
    fake.add_repository("us", "proj", "repo")
    data, digest = blob(4000, seed=4)
    with fake.serve() as url:
        settings = proxy_settings(
            tmp_path, url + "/{location}", auth="basic",
            upstream__username="oauth2accesstoken", upstream__password=TOKEN,
        )  # fmt: skip
        with run_proxy(settings) as first, httpx.Client(base_url=first.url) as client:
            location = client.post(UPLOADS).headers["location"]
            assert patch(client, location, data[:2500], 0).status_code == 202
        with run_proxy(settings) as second, httpx.Client(base_url=second.url) as client:
            resumed = patch(client, location, data[2500:], 2500)
            assert resumed.status_code == 202, resumed.text
            assert client.put(location, params={"digest": digest}).status_code == 201
            assert cached(second, digest) == len(data)
    assert fake.get_blob("us", REPO, digest) == data
    assert fake.writes() == 1


def test_wrong_digest_is_refused_and_nothing_is_cached(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, _ = blob(1000, seed=5)
    _, wrong = blob(1000, seed=6)
    location = client.post(UPLOADS).headers["location"]
    location = patch(client, location, data, 0).headers["location"]
    refused = client.put(location, params={"digest": wrong})
    assert (refused.status_code, code(refused)) == (400, "DIGEST_INVALID")
    assert cached(running, wrong) is None
    assert cached(running, "sha256:" + hashlib.sha256(data).hexdigest()) is None
    assert fake.get_blob("us", REPO, wrong) is None
    assert list((running.settings.cache.dir / "uploads").iterdir()) == []


# --------------------------------------------------------------------------- mounts


def test_mount_within_the_project_is_forwarded_without_bytes(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(2000, seed=7)
    fake.put_blob("us", "proj/src/img", data)
    answer = client.post(UPLOADS, params={"mount": digest, "from": "proj/src/img"})
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/v2/{REPO}/blobs/{digest}"
    assert answer.headers["docker-content-digest"] == digest
    assert fake.count("PATCH", "upload") + fake.count("PUT", "upload") == 0
    assert fake.count("GET", "blob") == 0
    assert fake.get_blob("us", REPO, digest) == data


def test_mount_across_projects_uploads_from_the_cache(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(2000, seed=8)
    fake.put_blob("us", "other/src/img", data)
    assert client.get(f"/v2/other/src/img/blobs/{digest}").content == data  # now cached
    fake.reset_counts()
    answer = client.post(UPLOADS, params={"mount": digest, "from": "other/src/img"})
    assert answer.status_code == 201, answer.text
    assert fake.count("GET", "blob") == 0
    assert fake.count("PUT", "upload") == 1
    assert fake.get_blob("us", REPO, digest) == data


def test_mount_across_projects_streams_from_the_source_or_hands_out_a_session(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(2000, seed=9)
    fake.put_blob("us", "other/src/img", data)
    answer = client.post(UPLOADS, params={"mount": digest, "from": "other/src/img"})
    assert answer.status_code == 201, answer.text
    assert fake.count("GET", "blob") == 1
    assert fake.get_blob("us", REPO, digest) == data
    nowhere, missing = blob(10, seed=10)
    answer = client.post(UPLOADS, params={"mount": missing, "from": "other/src/img"})
    assert answer.status_code == 202
    finished = client.put(answer.headers["location"], params={"digest": missing}, content=nowhere)
    assert finished.status_code == 201


def test_a_mount_without_from_is_an_upload_session_even_for_a_cached_blob(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    data, digest = blob(2000, seed=13)
    fake.put_blob("us", "proj/src/img", data)
    assert client.get(f"/v2/proj/src/img/blobs/{digest}").content == data  # cached now
    fake.reset_counts()
    for params in ({"mount": digest}, {"mount": digest, "from": ""}):
        answer = client.post(UPLOADS, params=params)
        assert answer.status_code == 202, answer.text
        assert answer.headers["location"].startswith(UPLOADS)
    assert fake.writes() == 0 and fake.count("GET", "blob") == 0
    assert fake.get_blob("us", REPO, digest) is None  # nothing copied "from the cache"


def test_a_mount_across_locations_is_a_copy_in_one_write(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    fake.add_repository("europe", "proj", "src")
    data, digest = blob(2000, seed=14)
    fake.put_blob("europe", "proj/src/img", data)
    source = "europe-docker.pkg.dev/proj/src/img"
    answer = client.post(UPLOADS, params={"mount": digest, "from": source})
    assert answer.status_code == 201, answer.text
    assert fake.get_blob("us", REPO, digest) == data
    # GAR cannot mount across regions: never asked to; the blob streamed from Europe.
    assert fake.count("POST", "upload") == 1 and fake.writes(digest) == 1
    assert fake.count("GET", "blob", location="europe") == 1
    _, missing = blob(10, seed=15)  # not in the source: the client uploads it
    answer = client.post(UPLOADS, params={"mount": missing, "from": source})
    assert answer.status_code == 202, answer.text
    assert fake.count("GET", "blob", location="europe") == 1


def test_a_same_project_mount_gar_refuses_falls_back_to_a_copy(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    fake.mounts_refused = True  # GAR answers the mount with an upload session (202)
    data, digest = blob(2000, seed=16)
    fake.put_blob("us", "proj/src/img", data)
    answer = client.post(UPLOADS, params={"mount": digest, "from": "proj/src/img"})
    assert answer.status_code == 201, answer.text
    assert fake.get_blob("us", REPO, digest) == data
    # The session GAR opened for the refused mount took the copy: no second POST.
    assert fake.count("POST", "upload") == 1 and fake.writes(digest) == 1


# --------------------------------------------------------------------------- manifests


def test_pushed_image_is_pulled_back_without_upstream_blob_gets(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    image = build_image([make_layer({"a": b"1"}), make_layer(seed=2)])
    index = build_index([image])
    push_image(running.url, REPO, "v1", index)
    assert fake.get_manifest("us", REPO, "v1") == (index.manifest, index.media_type)
    fake.reset_counts()
    accept = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
    assert client.get(f"/v2/{REPO}/manifests/v1", headers=accept).content == index.manifest
    assert client.get(f"/v2/{REPO}/manifests/{image.digest}").content == image.manifest
    for item in image.blobs:
        assert client.get(f"/v2/{REPO}/blobs/{item.digest}").content == item.data
    assert fake.count("GET") == 0


def test_an_index_copied_through_the_proxy_brings_its_cached_children(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    platforms = ((5, "amd64"), (6, "arm64"))
    images = [build_image([make_layer(seed=s)], architecture=a) for s, a in platforms]
    index = build_index(images)
    fake.put_image("us", REPO, "v1", index)
    accept = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
    for reference in ("v1", *(image.digest for image in images)):  # pulled: now cached
        assert client.get(f"/v2/{REPO}/manifests/{reference}", headers=accept).status_code == 200
    for item in index.blobs:
        assert client.get(f"/v2/{REPO}/blobs/{item.digest}").content == item.data
    target = "proj/repo/copy"
    for image in images:  # cached, but not in the target: answered as upstream would
        assert client.head(f"/v2/{target}/manifests/{image.digest}").status_code == 404
        for item in image.blobs:
            assert client.head(f"/v2/{target}/blobs/{item.digest}").status_code == 404
    assert fake.get_manifest("us", target, images[0].digest) is None
    answer = client.put(
        f"/v2/{target}/manifests/v1",
        content=index.manifest,
        headers={"Content-Type": index.media_type},
    )
    assert answer.status_code == 201, answer.text
    for image in images:
        assert fake.get_manifest("us", target, image.digest) == (image.manifest, image.media_type)
        for item in image.blobs:  # uploaded from the cache (or mounted)
            assert fake.get_blob("us", target, item.digest) == item.data
    assert fake.get_manifest("us", target, "v1") == (index.manifest, index.media_type)


def test_manifest_put_answers_location_digest_and_subject(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    image = build_image([make_layer(seed=3)])
    push_image(running.url, REPO, "v1", image)
    artifact = build_artifact(image, "application/vnd.example.sbom")
    for item in artifact.blobs:
        client.post(UPLOADS, params={"digest": item.digest}, content=item.data)
    answer = client.put(
        f"/v2/{REPO}/manifests/{artifact.digest}",
        content=artifact.manifest,
        headers={"Content-Type": artifact.media_type},
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/v2/{REPO}/manifests/{artifact.digest}"
    assert answer.headers["docker-content-digest"] == artifact.digest
    assert answer.headers["oci-subject"] == image.digest


def test_pushing_a_referrer_refreshes_the_cached_referrers_list(
    running: RunningProxy, client: httpx.Client
) -> None:
    image = build_image([make_layer(seed=4)])
    push_image(running.url, REPO, "v1", image)
    before = client.get(f"/v2/{REPO}/referrers/{image.digest}")
    assert before.status_code == 200 and before.json()["manifests"] == []  # now cached
    artifact = build_artifact(image, "application/vnd.example.sbom")
    push_image(running.url, REPO, None, artifact)
    after = client.get(f"/v2/{REPO}/referrers/{image.digest}")
    assert [m["digest"] for m in after.json()["manifests"]] == [artifact.digest]


def test_blob_cached_but_not_upstream_is_uploaded_before_the_manifest(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    image = build_image([make_layer(seed=4)])
    fake.put_image("us", "other/src/img", "v1", image)
    for item in image.blobs:  # pulled once: cached, but not in REPO (a client may skip it)
        client.get(f"/v2/other/src/img/blobs/{item.digest}")
        assert client.head(f"/v2/{REPO}/blobs/{item.digest}").status_code == 404
    answer = client.put(
        f"/v2/{REPO}/manifests/v1",
        content=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    assert answer.status_code == 201, answer.text
    assert all(fake.get_blob("us", REPO, item.digest) == item.data for item in image.blobs)


def test_delete_is_refused_unless_allowed(fake: FakeGAR, tmp_path: Path) -> None:
    upstream = fake.upstream
    image = build_image([make_layer(seed=5)])
    fake.put_image("us", REPO, "v1", image)
    with run_proxy(proxy_settings(tmp_path / "a", upstream)) as running:
        refused = httpx.delete(f"{running.url}/v2/{REPO}/manifests/v1")
        assert (refused.status_code, code(refused)) == (405, "UNSUPPORTED")
    assert fake.count("DELETE") == 0
    settings = proxy_settings(tmp_path / "b", upstream, server__allow_delete="true")
    with run_proxy(settings) as running, httpx.Client(base_url=running.url) as client:
        assert client.get(f"/v2/{REPO}/manifests/v1").status_code == 200  # tag now cached
        assert client.delete(f"/v2/{REPO}/manifests/v1").status_code == 202
        assert fake.tags("us", REPO) == {}
        assert client.get(f"/v2/{REPO}/manifests/v1").status_code == 404


# --------------------------------------------------------------------------- bad input


def test_bad_upload_requests_get_oci_errors_and_leave_upstream_consistent(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    unknown = client.patch(f"{UPLOADS}{'0' * 32}", content=b"x")
    assert (unknown.status_code, code(unknown)) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert code(client.patch(f"{UPLOADS}not-an-id", content=b"x")) == "BLOB_UPLOAD_UNKNOWN"
    data, digest = blob(100, seed=11)
    location = client.post(UPLOADS).headers["location"]
    mismatch = client.patch(location, content=data[:50], headers={"Content-Range": "0-99"})
    assert (mismatch.status_code, code(mismatch)) == (400, "SIZE_INVALID")
    assert code(patch(client, location, data, 7)) == "RANGE_INVALID"
    assert code(client.put(location, params={"digest": "sha256:nope"})) == "DIGEST_INVALID"
    assert fake.count("PATCH", "upload") + fake.count("PUT", "upload") == 0
    assert patch(client, location, data, 0).status_code == 202
    assert client.put(location, params={"digest": digest}).status_code == 201


def _put_manifest(client: httpx.Client, body: bytes, media_type: str) -> httpx.Response:
    return client.put(
        f"/v2/{REPO}/manifests/v1", content=body, headers={"Content-Type": media_type}
    )


def test_bad_manifests_are_refused_before_upstream(
    fake: FakeGAR, running: RunningProxy, client: httpx.Client
) -> None:
    image = build_image([make_layer(seed=6)])
    missing = _put_manifest(client, image.manifest, image.media_type)
    assert (missing.status_code, code(missing)) == (400, "MANIFEST_BLOB_UNKNOWN")
    not_json = _put_manifest(client, b"{not json", mt.OCI_MANIFEST)
    assert (not_json.status_code, code(not_json)) == (400, "MANIFEST_INVALID")
    other: dict[str, Any] = {**image.manifest_json(), "mediaType": mt.DOCKER_MANIFEST_V2}
    clash = _put_manifest(client, json.dumps(other).encode(), mt.OCI_MANIFEST)
    assert code(clash) == "MANIFEST_INVALID"
    by_digest = client.put(f"/v2/{REPO}/manifests/sha256:{'0' * 64}", content=image.manifest)
    assert code(by_digest) == "DIGEST_INVALID"
    assert fake.count("PUT", "manifest") == 0


def test_oversized_manifest_is_refused_without_reading_it(running: RunningProxy) -> None:
    """Raw socket: announce 5 MiB, send 64 KiB, and the answer comes anyway."""
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"PUT /v2/{REPO}/manifests/v1 HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: {mt.OCI_MANIFEST}\r\nContent-Length: {5 << 20}\r\n\r\n".encode()
            + b"{" * 65536
        )
        answer = http.client.HTTPResponse(sock)  # reads the answer, exactly, off the socket
        answer.begin()
        body = json.loads(answer.read())
    assert answer.status == 413
    assert body["errors"][0]["code"] == "SIZE_INVALID"


# --------------------------------------------------------------------------- push helper


def test_cli_push_uploads_a_layout_then_skips_what_upstream_has(
    fake: FakeGAR, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream = fake.upstream
    amd = build_image([make_layer(seed=7), make_layer(seed=8)])
    arm = build_image([make_layer(seed=9)], architecture="arm64")
    index = build_index([amd, arm])
    layout = write_oci_layout(tmp_path / "layout", index, "v2")
    args = ["--upstream", upstream, "--auth", "none", "--cache-dir", str(tmp_path / "cache")]
    target = f"us-docker.pkg.dev/{REPO}:v2"
    assert cli_main([*args, "push", f"{layout}:v2", target]) == 0
    assert fake.get_manifest("us", REPO, "v2") == (index.manifest, index.media_type)
    assert all(fake.get_blob("us", REPO, b.digest) == b.data for b in index.blobs)
    out = capsys.readouterr().out
    assert f"pushing {len(index.blobs)} blobs" in out
    assert f"pushed us-docker.pkg.dev/{REPO}@{index.digest}" in out
    fake.reset_counts()
    assert cli_main([*args, "push", f"{layout}:v2", target]) == 0
    assert fake.count("POST", "upload") == 0
    assert capsys.readouterr().out.count(" exists") == len(index.blobs)
    assert cli_main([*args, "push", f"{layout}:nope", target]) == 1
    assert "does not hold tag 'nope'" in capsys.readouterr().err
