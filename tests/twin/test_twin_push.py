"""Pushes through the proxy to the GAR twin: every client pattern, every open answer.

Client patterns (docs/GAR.md U6): docker's POST + one streamed PATCH + empty PUT,
containerd's POST + PUT with the body, chunked PATCHes with Content-Range, a monolithic
``POST ?digest=``, a mount. GAR's open answers (U1-U11): the session Location's form
(relative, absolute, with a query string, under ``/v2/P/R/pkg/``), sessions that need
``Authorization``, the PATCH answer's status, Location and Range, the PUT's status and
headers, what a ``POST ?digest=`` does, mounts that land or open a session. Whatever GAR
does: the client's 201 means the blob is in GAR under that digest (one write to one
session), the manifest push lands, and no session URL reaches the client.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar_twin import GarTwin
from testkit.images import build_image, make_layer
from tests.twin.conftest import ThroughFactory, TwinFactory, assert_never_named

NAME = "proj/repo/app"
UPLOADS = f"/v2/{NAME}/blobs/uploads/"

VARIANTS: dict[str, dict[str, Any]] = {
    "as-recorded": {},
    "absolute-session-location": {"upload_location": "absolute"},
    "session-location-with-a-query": {"upload_location": "query"},
    "session-under-pkg": {"upload_location": "pkg"},
    "sessions-need-authorization": {"session_auth": True},
    "patch-answers-204": {"patch_status": 204},
    "patch-moves-the-session": {"patch_location": "new"},
    "patch-without-location": {"patch_location": "none"},
    "patch-without-range": {"patch_range": "none"},
    "patch-range-with-bytes-unit": {"patch_range": "bytes=0-N"},
    "patch-range-0-0": {"patch_range": "0-0"},
    "put-answers-204": {"put_status": 204},
    "put-without-digest-header": {"put_digest": False},
    "post-with-digest-lands": {"monolithic_post": "created"},
    "post-with-digest-refused": {"monolithic_post": "refused"},
    "mount-opens-a-session": {"mount": "session"},
    "upload-uuid-header": {"upload_uuid": True},
    "second-write-409": {"second_write_status": 409},
    "token-dies-after-4-requests": {"token_uses": 4},
    "manifest-put-without-digest-header": {"manifest_digest": False},
    "no-keep-alive": {"close_connections": True},
    # A session that needs Authorization, and the token dying on the way: at the
    # streamed PATCH, the committing PUT. (GAR's tokens die by time; a count of 1 or 2
    # uses would kill each fresh token before the write it was bought for.)
    **{
        f"session-auth-token-dies-after-{n}": {"session_auth": True, "token_uses": n}
        for n in (3, 4, 5)
    },
    "session-401-without-challenge": {
        "session_auth": True,
        "session_challenge": False,
        "token_uses": 4,
    },
    "everything-else-at-once": {
        "upload_location": "query",
        "session_auth": True,
        "patch_status": 204,
        "patch_location": "new",
        "patch_range": "none",
        "put_status": 204,
        "put_digest": False,
        "manifest_digest": False,
    },
}


def blob(size: int, seed: int) -> tuple[bytes, str]:
    data = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32))
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def docker_way(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    patched = client.patch(location, content=iter([data]))  # streamed, chunked
    assert patched.status_code == 202, patched.text
    return client.put(patched.headers["location"], params={"digest": digest})


def containerd_way(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    return client.put(location, params={"digest": digest}, content=data)


def chunked_way(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    location = client.post(UPLOADS).headers["location"]
    third = len(data) // 3
    for start in (0, third, 2 * third):
        part = data[start : start + third] if start < 2 * third else data[start:]
        headers = {"Content-Range": f"{start}-{start + len(part) - 1}",
                   "Content-Type": mt.OCTET_STREAM}  # fmt: skip
        patched = client.patch(location, content=part, headers=headers)
        assert patched.status_code == 202, patched.text
        assert patched.headers["range"] == f"0-{start + len(part) - 1}"
        location = patched.headers["location"]
    return client.put(location, params={"digest": digest})


def monolithic_way(client: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    return client.post(UPLOADS, params={"digest": digest}, content=data)


PATTERNS = {
    "docker": docker_way,
    "containerd": containerd_way,
    "chunked": chunked_way,
    "monolithic": monolithic_way,
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_client_pattern_lands_whatever_gar_answers(
    variant: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    served: GarTwin = twin(**VARIANTS[variant])
    running = through(served)
    seen: list[str] = []
    with httpx.Client(base_url=running.url, timeout=30) as client:
        for seed, (pattern, push) in enumerate(PATTERNS.items()):
            data, digest = blob(150_000 + seed, seed)
            landed = push(client, data, digest)
            seen.append(f"{landed.status_code} {dict(landed.headers)} {landed.text}")
            assert landed.status_code == 201, (pattern, landed.text)
            assert landed.headers["docker-content-digest"] == digest, pattern
            assert served.store.blobs["proj/repo"].get(digest) == data, pattern
            head = client.head(f"/v2/{NAME}/blobs/{digest}")
            assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        image = build_image([make_layer(size=50_000, seed=9)])
        for item in image.blobs:
            assert containerd_way(client, item.data, item.digest).status_code == 201
        put = client.put(f"/v2/{NAME}/manifests/v1", content=image.manifest,
                         headers={"Content-Type": image.media_type})  # fmt: skip
        assert put.status_code == 201, put.text
        assert put.headers["docker-content-digest"] == image.digest
        assert served.store.tags[(NAME, "v1")] == image.digest
    assert served.writes and all(n == 1 for n in served.writes), served.writes
    assert_never_named(seen, served)


@pytest.mark.parametrize("variant", ["as-recorded", "mount-opens-a-session"])
def test_a_mount_lands_or_falls_back_to_a_copy(
    variant: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    served = twin(**VARIANTS[variant])
    data, digest = blob(70_000, 40)
    served.put_blob("proj/repo/src", data)
    running = through(served)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        pulled = client.get(f"/v2/proj/repo/src/blobs/{digest}")  # the proxy may read from
        assert pulled.content == data
        mounted = client.post(UPLOADS, params={"mount": digest, "from": "proj/repo/src"})
    if mounted.status_code == 202:  # the client uploads it itself, as the spec allows
        assert not served.store.blobs["proj/repo"].get(digest)
        assert_never_named([str(dict(mounted.headers))], served)
    else:
        assert mounted.status_code == 201, mounted.text
        assert mounted.headers["docker-content-digest"] == digest
    assert served.writes == [] or served.writes == [1]


def test_a_session_opened_without_a_location_is_an_upstream_error(
    twin: TwinFactory, through: ThroughFactory
) -> None:
    served = twin(upload_location="none")
    running = through(served)
    data, digest = blob(10_000, 50)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        started = client.post(UPLOADS)
        landed = containerd_way(client, data, digest) if started.status_code == 202 else started
    assert landed.status_code == 502, landed.text
    assert landed.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert served.writes == []
