"""Upstream misbehaving mid-transfer: the client's download is cut, nothing is cached.

A truncated body, flipped bytes or a connection reset during a blob fill must never
give a client a complete response with bad content, must leave no file under ``blobs/``
or ``tmp/`` and no index row, and must not poison the next request once upstream is
healthy again. Manifests and listings cut mid-body are upstream errors (502), never
internal ones (500).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

REPO = "proj/repo/app"
KEY = f"us-docker.pkg.dev/{REPO}"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
# Every fault acts on every try (the proxy's retries of a refused connection included).
BLOB_FAULTS: dict[str, dict[str, Any]] = {
    "truncated": {"truncate_at": 300_000},
    "wrong-bytes": {"corrupt": True},
    "reset-mid-body": {"truncate_at": 300_000, "reset": True},
    "reset-before-headers": {"reset": True},
}


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


@pytest.fixture
def running(fake: FakeGAR, proxy: ProxyFactory) -> RunningProxy:
    return proxy(fake.upstream, transport__retries="1")


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def settled(running: RunningProxy, digest: Digest) -> None:
    """Until no fill of ``digest`` is running (the client may hear of a failure first)."""
    deadline = time.monotonic() + 10
    while running.services.blobs.fill_for(digest) is not None:
        assert time.monotonic() < deadline, "fill never ended"
        time.sleep(0.01)


def download(http: httpx.Client, url: str) -> tuple[int, bytes, int | None]:
    """(status, bytes received, Content-Length) however the transfer ends."""
    body = bytearray()
    with http.stream("GET", url) as response:
        length = response.headers.get("content-length")
        try:
            for chunk in response.iter_raw():
                body += chunk
        except httpx.HTTPError:
            pass  # the cut we are looking for; judged by what arrived
        return response.status_code, bytes(body), int(length) if length else None


@pytest.mark.parametrize("name", list(BLOB_FAULTS))
def test_blob_fault_cuts_the_client_and_caches_nothing(
    name: str, fake: FakeGAR, running: RunningProxy
) -> None:
    data = make_layer(size=1 << 20, seed=20)
    digest = fake.put_blob("us", REPO, data)
    parsed = Digest.parse(digest)
    fault = fake.add_fault(Fault(kind="blob", method="GET", **BLOB_FAULTS[name]))
    cache = running.settings.cache.dir
    url = f"/v2/{REPO}/blobs/{digest}"
    with httpx.Client(base_url=running.url, timeout=30, verify=False) as http:
        status, body, length = download(http, url)
        assert fault.hits >= 1
        if status == 200:
            assert length == len(data)
            assert len(body) < len(data), "a complete body of bad content reached the client"
        else:
            assert status >= 500
            assert body == b"" or b'"errors"' in body
        settled(running, parsed)
        assert files_under(cache / "blobs") == []
        assert files_under(cache / "tmp") == []
        assert running.call(running.services.index.blobs.size(parsed)) is None
        assert running.services.cache.size(parsed) is None

        fake.clear_faults()
        healthy = http.get(url)
        assert healthy.status_code == 200 and healthy.content == data
    assert running.services.cache.size(parsed) == len(data)
    assert files_under(cache / "tmp") == []


def test_wrong_manifest_bytes_by_digest_are_refused_and_not_cached(
    fake: FakeGAR, running: RunningProxy
) -> None:
    image = build_image([make_layer({"f": b"1"})])
    fake.put_image("us", REPO, "1.0", image)
    fake.add_fault(Fault(kind="manifest", method="GET", corrupt=True, times=1))
    with httpx.Client(base_url=running.url, timeout=30, verify=False) as http:
        bad = http.get(f"/v2/{REPO}/manifests/{image.digest}")
        assert bad.status_code == 502
        assert bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert (
            running.call(running.services.index.manifests.get(Digest.parse(image.digest))) is None
        )
        good = http.get(f"/v2/{REPO}/manifests/{image.digest}")
        assert good.status_code == 200 and good.content == image.manifest
        assert good.headers["content-type"] == mt.OCI_MANIFEST
    assert fake.count("GET", "manifest") == 2


@pytest.mark.parametrize("cut", [{"truncate_at": 40}, {"truncate_at": 40, "reset": True}])
def test_manifest_cut_mid_body_is_an_upstream_error(
    cut: dict[str, Any], fake: FakeGAR, running: RunningProxy
) -> None:
    image = build_image([make_layer({"f": b"2"})])
    fake.put_image("us", REPO, "1.0", image)
    fake.add_fault(Fault(kind="manifest", method="GET", times=1, **cut))
    with httpx.Client(base_url=running.url, timeout=30, verify=False) as http:
        bad = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
        assert bad.status_code == 502, bad.text
        assert bad.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert running.call(running.services.index.tags.get(KEY, "1.0")) is None
        assert (
            running.call(running.services.index.manifests.get(Digest.parse(image.digest))) is None
        )
        good = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
        assert good.status_code == 200 and good.content == image.manifest


def test_listings_cut_mid_body_are_upstream_errors(fake: FakeGAR, running: RunningProxy) -> None:
    image = build_image([make_layer({"f": b"3"})])
    fake.put_image("us", REPO, "1.0", image)
    fake.add_fault(Fault(kind="tags", truncate_at=5, times=1))
    fake.add_fault(Fault(kind="referrers", truncate_at=5, reset=True, times=1))
    with httpx.Client(base_url=running.url, timeout=30, verify=False) as http:
        tags = http.get(f"/v2/{REPO}/tags/list")
        assert tags.status_code == 502, tags.text
        assert tags.json()["errors"][0]["code"] == "UNAVAILABLE"
        referrers = http.get(f"/v2/{REPO}/referrers/{image.digest}")
        assert referrers.status_code == 502, referrers.text
        assert http.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["1.0"]
        assert http.get(f"/v2/{REPO}/referrers/{image.digest}").json()["manifests"] == []


@pytest.mark.parametrize("name", ["truncated", "wrong-bytes"])
def test_a_cut_response_is_one_warning_not_a_traceback_per_client(
    name: str, fake: FakeGAR, running: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_layer(size=1 << 20, seed=21)
    digest = fake.put_blob("us", REPO, data)
    fake.add_fault(Fault(kind="blob", method="GET", **BLOB_FAULTS[name]))
    with httpx.Client(base_url=running.url, timeout=30) as http:
        status, body, length = download(http, f"/v2/{REPO}/blobs/{digest}")
    assert status == 200 and length == len(data) and len(body) < len(data)  # cut, as it must
    settled(running, Digest.parse(digest))
    # (wrong bytes are an ERROR of their own, once, from the fill: that one is wanted)
    tracebacks = [r for r in caplog.records if r.exc_info or "ASGI" in r.getMessage()]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    assert any("response cut short" in r.getMessage() for r in caplog.records)
