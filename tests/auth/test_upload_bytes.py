"""One identity cannot spool the disk: ``server.max_upload_bytes_per_identity`` over HTTP.

alice opens sessions and PATCHes bytes she never finishes; past her cap a body is
refused (429 ``TOOMANYREQUESTS``, before its bytes are taken when its length is known,
at the piece that passes the cap when it is sent chunked), what she stored before stays,
and builder, who pushes the same repository, pushes on. Her room comes back when she
cancels a session (DELETE) and when one completes (its bytes are the cache's then).
Setup: ``tests/auth/accesskit.py``; the cap is 64 KiB.
"""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterator

import pytest

from proxy.oci.digest import Digest
from tests.auth.accesskit import Answer, Setup, basic, call, seeded_proxy

KIB = 1024
REPO = "alpha/team/app"
BLOB = bytes(range(256)) * 200  # 51,200 bytes: 50 KiB


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("upload-bytes")
    with seeded_proxy(directory, server__max_upload_bytes_per_identity="64KiB",
                      access__failed_login_burst="1000") as seeded:  # fmt: skip
        yield seeded


def _start(setup: Setup, who: str) -> str:
    started = call(setup.url, "POST", f"/v2/{REPO}/blobs/uploads/", basic(who))
    assert started.status == 202, started.body[:300]
    return started.headers["location"]


def _patch(setup: Setup, who: str, where: str, data: bytes) -> Answer:
    return call(setup.url, "PATCH", where, basic(who), data)


def _patch_chunked(setup: Setup, who: str, where: str, data: bytes) -> Answer:
    """A PATCH without Content-Length (``Transfer-Encoding: chunked``), as docker sends."""
    parts = urllib.parse.urlsplit(setup.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        pieces = (data[i : i + 8 * KIB] for i in range(0, len(data), 8 * KIB))
        connection.request("PATCH", where, body=pieces, headers=basic(who), encode_chunked=True)
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


def _offset(setup: Setup, who: str, where: str) -> int:
    """The bytes the session holds (``Range: 0-N``; "0-0" is empty too, as registries say)."""
    answer = call(setup.url, "GET", where, basic(who))
    assert answer.status == 204, answer.body[:300]
    last = int(answer.headers["range"].split("-")[1])
    return last + 1 if last else 0


def _refused(answer: Answer) -> None:
    assert answer.status == 429 and answer.code == "TOOMANYREQUESTS", answer.body[:300]
    assert "server.max_upload_bytes_per_identity" in answer.body.decode()
    assert int(answer.headers["retry-after"]) > 0


def test_one_identity_over_its_cap_is_refused_and_another_pushes_on(capped: Setup) -> None:
    first = _start(capped, "alice")
    assert _patch(capped, "alice", first, BLOB[: 40 * KIB]).status == 202
    second = _start(capped, "alice")
    _refused(_patch(capped, "alice", second, BLOB[: 30 * KIB]))  # Content-Length: at once
    _refused(_patch_chunked(capped, "alice", second, BLOB[: 30 * KIB]))  # at the piece
    assert _offset(capped, "alice", second) == 0  # the refused bodies left nothing
    assert _offset(capped, "alice", first) == 40 * KIB  # what she stored before stays
    # builder may push the same repository: alice's bytes are not his.
    other = _start(capped, "builder")
    assert _patch_chunked(capped, "builder", other, BLOB).status == 202
    digest = Digest.of(BLOB)
    landed = call(capped.url, "PUT", f"{other}?digest={digest}", basic("builder"), b"")
    assert landed.status == 201, landed.body[:300]
    assert capped.fake.get_blob("us", REPO, str(digest)) == BLOB
    # A body larger than the whole cap can never fit: 413, not "wait".
    huge = bytes(70 * KIB)
    too_big = call(capped.url, "POST", f"/v2/{REPO}/blobs/uploads/?digest={Digest.of(huge)}",
                   basic("alice"), huge)  # fmt: skip
    assert too_big.status == 413 and too_big.code == "SIZE_INVALID", too_big.body[:300]
    # DELETE gives her room back.
    assert call(capped.url, "DELETE", first, basic("alice")).status == 204
    assert _patch(capped, "alice", second, BLOB[: 30 * KIB]).status == 202
    assert _patch(capped, "alice", second, BLOB[30 * KIB :]).status == 202
    third = _start(capped, "alice")
    _refused(_patch(capped, "alice", third, BLOB[: 20 * KIB]))  # 50 + 20 KiB > 64 KiB
    # Completion gives it back too: the finished blob is the cache's, not her spool's.
    done = call(capped.url, "PUT", f"{second}?digest={digest}", basic("alice"), b"")
    assert done.status == 201, done.body[:300]
    assert _patch(capped, "alice", third, BLOB).status == 202  # fits once second is gone
    call(capped.url, "DELETE", third, basic("alice"))
