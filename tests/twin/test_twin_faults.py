"""GAR's error answers, as the twin can give them, through the proxy.

The record has GAR's OCI envelope for registry errors (A11) and Google's JSON for the
REST API (R1); what its front ends send for 429s and 5xx, what an edge error looks like
(HTML), whether ``Retry-After`` is seconds or a date, whether a registry path can answer
Google JSON, an unknown code or an empty ``errors`` list: unknown. Whatever arrives, the
client gets a status that says the same thing in the OCI envelope, a transient fault is
retried, nothing is cached from a failure, and the next request works.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from proxy.oci.errors import ErrorCode
from proxy.services.blob_copy import ATTEMPTS
from testkit import invariants
from testkit.fakes.gar_twin import GarTwin
from testkit.images import Image, build_image, make_layer
from tests.twin.conftest import ThroughFactory, TwinFactory, assert_never_named

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
NAME = "proj/repo/app"
# The proxy's own table (proxy/oci/errors.py): the spec's codes, distribution's, its own.
KNOWN_CODES = {code.wire for code in ErrorCode}
FOREVER = 1000


def envelope(response: httpx.Response) -> str:
    """The OCI error code of an error answer (asserting its shape)."""
    body = json.loads(response.content)
    assert isinstance(body["errors"], list) and body["errors"], response.text
    first = body["errors"][0]
    assert isinstance(first["message"], str) and first["message"], response.text
    assert "<html" not in response.text.lower()
    return str(first["code"])


def later(seconds: int) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


def image() -> Image:
    return build_image([make_layer(size=200_000, seed=11)])


# (kind, fault fields, the statuses the client may get, the codes it may carry)
Case = tuple[str, dict[str, Any], set[int], set[str]]
GATEWAY, DOWN = {502, 503}, {"UNKNOWN", "UNAVAILABLE"}
LIMITED = ({429}, {"TOOMANYREQUESTS"})


def lasting(status: int, body: str = "oci", **fields: Any) -> dict[str, Any]:
    return {"status": status, "body": body, **fields}


PERSISTENT: dict[str, Case] = {
    "429-oci-retry-after-seconds": (
        "manifest", lasting(429, headers=(("retry-after", "1"),)), *LIMITED),
    "429-retry-after-an-hour-as-a-date": (
        "manifest", lasting(429, headers=(("retry-after", later(3600)),)), *LIMITED),
    "429-google-json": ("manifest", lasting(429, "google"), *LIMITED),
    "429-html-no-retry-after": ("blob", lasting(429, "html"), *LIMITED),
    "502-html": ("manifest", lasting(502, "html"), GATEWAY, DOWN),
    "503-html-on-download": ("download", lasting(503, "html"), GATEWAY, DOWN),
    "500-empty": ("blob", lasting(500, "empty"), GATEWAY, DOWN),
    "403-google-json-on-the-registry": (
        "manifest", lasting(403, "google"), {403}, {"DENIED"}),
    "404-empty-body-manifest": (
        "manifest", lasting(404, "empty"), {404}, {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}),
    "404-empty-errors-blob": (
        "blob", lasting(404, "no-errors"), {404}, {"BLOB_UNKNOWN", "NAME_UNKNOWN"}),
    "400-unknown-code": ("manifest", lasting(400, "unknown-code"), {400}, KNOWN_CODES),
    "token-endpoint-503-html": ("token", lasting(503, "html"), GATEWAY, DOWN),
    "token-endpoint-200-not-json": ("token", lasting(200, "html"), {502}, DOWN),
}  # fmt: skip


@pytest.mark.parametrize("case", PERSISTENT)
def test_a_lasting_fault_is_told_in_the_oci_envelope_and_leaves_nothing_behind(
    case: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    kind, fields, statuses, codes = PERSISTENT[case]
    served: GarTwin = twin()
    pushed = image()
    served.put_image(NAME, "v1", pushed)
    running = through(served, cache__negative_ttl="30s")
    layer = pushed.layers[0]
    fault = served.fail(kind, times=FOREVER, **fields)
    started = time.monotonic()
    with httpx.Client(base_url=running.url, timeout=60) as client:
        if kind == "manifest" or kind == "token":
            failed = client.get(f"/v2/{NAME}/manifests/v1", headers=ACCEPT)
        else:
            failed = client.get(f"/v2/{NAME}/blobs/{layer.digest}")
        assert time.monotonic() - started < 30, "the client waited on upstream's say-so"
        assert failed.status_code in statuses, (failed.status_code, failed.text)
        assert envelope(failed) in codes, failed.text
        assert_never_named([failed.text, str(dict(failed.headers))], served)
        fault.times = 0  # GAR is well again: nothing of the failure was kept
        if failed.status_code >= 429 or failed.status_code == 403:
            again = client.get(f"/v2/{NAME}/blobs/{layer.digest}")
            assert again.status_code == 200 and again.content == layer.data, again.text
            manifest = client.get(f"/v2/{NAME}/manifests/v1", headers=ACCEPT)
            assert manifest.status_code == 200 and manifest.content == pushed.manifest
    report = invariants.check(running.settings.cache.dir)
    assert report.ok, report.problems


TRANSIENT: dict[str, tuple[str, dict[str, Any]]] = {
    "429-then-well": ("manifest", {"status": 429, "headers": (("retry-after", "0"),)}),
    "503-html-then-well": ("blob", {"status": 503, "body": "html"}),
    "download-503-then-well": ("download", {"status": 503, "body": "html"}),
    "download-cut-then-well": ("download", {"status": 200, "cut_after": 50_000}),
    "blob-redirect-cut-then-well": ("blob", {"status": 200, "cut_after": 0}),
    "token-503-then-well": ("token", {"status": 503, "body": "html"}),
    "session-put-503-then-well": ("session", {"status": 503, "method": "PUT"}),
    "session-patch-cut-then-well": ("session", {"status": 200, "method": "PATCH", "cut_after": 0}),
    "upload-post-500-then-well": ("upload", {"status": 500, "body": "empty"}),
    "session-put-429-then-well": (
        "session",
        {"status": 429, "method": "PUT", "headers": (("retry-after", "1"),)},
    ),
    "session-patch-429-then-well": ("session", {"status": 429, "method": "PATCH"}),
    "session-patch-google-403-then-well": (
        "session",
        {"status": 403, "method": "PATCH", "body": "google"},
    ),
    "session-put-403-then-well": ("session", {"status": 403, "method": "PUT"}),
}


@pytest.mark.parametrize("case", TRANSIENT)
def test_a_passing_fault_is_retried_and_the_client_never_sees_it(
    case: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    kind, fields = TRANSIENT[case]
    served: GarTwin = twin()
    pushed = image()
    served.put_image(NAME, "v1", pushed)
    running = through(served)
    served.fail(kind, **fields)
    downloads = invariants.Downloads()
    layer = pushed.layers[0]
    with httpx.Client(base_url=running.url, timeout=60) as client:
        manifest = client.get(f"/v2/{NAME}/manifests/v1", headers=ACCEPT)
        assert manifest.status_code == 200 and manifest.content == pushed.manifest
        got = downloads.get(client, f"/v2/{NAME}/blobs/{layer.digest}", layer.digest)
        assert got.complete and got.actual == layer.digest, got
        data = b"x" * 100_000 + case.encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location = client.post(f"/v2/{NAME}/blobs/uploads/").headers["location"]
        patched = client.patch(location, content=iter([data]))
        landed = client.put(patched.headers["location"], params={"digest": digest})
        assert landed.status_code == 201, landed.text
    assert served.store.blobs["proj/repo"][digest] == data
    report = invariants.check(running.settings.cache.dir, downloads)
    assert report.ok, report.problems


@pytest.mark.parametrize("ranges", [True, False], ids=["range-honoured", "range-ignored"])
@pytest.mark.parametrize("where", ["relative", "storage"])
def test_a_download_cut_mid_body_is_picked_up_where_it_broke(
    ranges: bool, where: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    served: GarTwin = twin(ranges=ranges, download_location=where)
    data = make_layer(size=900_000, seed=12)
    digest = served.put_blob(NAME, data)
    running = through(served)
    kind = "storage" if where == "storage" else "download"
    served.fail(kind, 200, cut_after=300_000, times=2)  # twice: the first resume is cut too
    downloads = invariants.Downloads()
    with httpx.Client(base_url=running.url, timeout=60) as client:
        got = downloads.get(client, f"/v2/{NAME}/blobs/{digest}", digest)
    assert got.complete and got.actual == digest, got
    # The whole blob, then twice from the first byte not yet received (a byte count the
    # proxy had in hand: bytes still in its read buffer at the cut are asked for again).
    first, *resumes = served.ranges_asked
    assert first == "" and len(resumes) == 2, served.ranges_asked
    assert all(r.startswith("bytes=") and r.endswith("-") for r in resumes), resumes
    report = invariants.check(running.settings.cache.dir, downloads)
    assert report.ok and report.files == 1, report.problems


def test_a_download_cut_again_and_again_is_cut_for_the_client_and_not_kept(
    twin: TwinFactory, through: ThroughFactory
) -> None:
    served: GarTwin = twin()
    data = make_layer(size=500_000, seed=13)
    digest = served.put_blob(NAME, data)
    running = through(served)
    served.fail("download", 200, cut_after=100_000, times=FOREVER)
    downloads = invariants.Downloads()
    with httpx.Client(base_url=running.url, timeout=60) as client:
        got = downloads.get(client, f"/v2/{NAME}/blobs/{digest}", digest)
    assert not got.complete and got.status in (200, 502), got
    assert 1 < len(served.ranges_asked) <= 5  # a few resumes, then given up
    report = invariants.check(running.settings.cache.dir, downloads)
    assert report.ok and report.files == 0, report.problems


@pytest.mark.parametrize("where", ["session", "upload"])
def test_a_lasting_refusal_of_uploads_is_told_and_bounded(
    where: str, twin: TwinFactory, through: ThroughFactory
) -> None:
    """A 403 on a session GAR opened is the session's (its signature): a fresh session is
    tried, a bounded number of times (docs/GAR.md U13). A 403 to opening one is GAR's
    permission answer, for good."""
    served: GarTwin = twin()
    running = through(served)
    served.fail(where, 403, method="PUT" if where == "session" else "POST", times=FOREVER,
                body="google")  # fmt: skip
    data = b"refused" * 10_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=running.url, timeout=60) as client:
        started = client.post(f"/v2/{NAME}/blobs/uploads/")
        refused = started
        if started.status_code == 202:
            location = started.headers["location"]
            refused = client.put(location, params={"digest": digest}, content=data)
    expected = {"session": (400, "BLOB_UPLOAD_INVALID"), "upload": (403, "DENIED")}[where]
    assert (refused.status_code, envelope(refused)) == expected, refused.text
    assert "The caller does not have permission" in refused.text  # GAR's words
    assert served.store.blobs["proj/repo"] == {} and served.writes == []
    assert served.count("POST", "upload") <= ATTEMPTS + 1
    assert_never_named([refused.text, str(dict(refused.headers))], served)


@pytest.mark.parametrize("ranges", [True, False], ids=["416-past-the-end", "200-whole"])
def test_a_chunked_download_cut_after_its_last_byte_is_whole(
    ranges: bool, twin: TwinFactory, through: ThroughFactory
) -> None:
    """Every byte arrived, then the connection went before the chunked body's end: the
    proxy cannot tell, asks from the end, and GAR answers 416 (or the whole blob)."""
    served: GarTwin = twin(download_chunked=True, ranges=ranges)
    data = make_layer(size=200_000, seed=14)
    digest = served.put_blob(NAME, data)
    running = through(served)
    served.fail("download", 200, cut_after=len(data), times=1)
    downloads = invariants.Downloads()
    with httpx.Client(base_url=running.url, timeout=60) as client:
        got = downloads.get(client, f"/v2/{NAME}/blobs/{digest}", digest)
    assert got.complete and got.actual == digest, got
    report = invariants.check(running.settings.cache.dir, downloads)
    assert report.ok and report.files == 1, report.problems
