"""Bad input gets the right OCI error, and touches neither the cache nor upstream.

Requests go out through ``http.client``, which sends a path exactly as written
(httpx would resolve ``..`` before it left). The proxy resolves locations by lookup as
in production; ``proj`` is routed to ``us`` so that valid names need no lookup, while
names under ``other/`` would trigger one: any request reaching the fake is counted.
"""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.cache.index import CacheIndex
from testkit.fakes.gar import FakeGAR
from testkit.fakes.gar_model import Kind
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy
from tests.conftest import FakeGarFactory, ProxyFactory

GOOD_DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
BAD_NAMES = {
    "dot-dot": "../x/y",
    "dot-dot-inside": "proj/repo/../app",
    "encoded-dot-dot": "proj/repo/%2E%2E",
    "uppercase": "Proj/repo/app",
    "empty-segment": "p//i",
    "long-segment": "p/r/" + "a" * 300,
    "too-few-segments": "proj/app",
    "leading-slash": "/proj/repo/app",
    "trailing-separator": "proj/repo/app-",
}
BAD_DIGESTS = {
    "not-hex": "sha256:xyz",
    "short": "sha256:" + "a" * 63,
    "long": "sha256:" + "a" * 65,
    "uppercase-hex": "sha256:" + "A" * 64,
    "unknown-algorithm": "md5:" + "a" * 32,
    "no-algorithm": ":" + "a" * 64,
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def code(self) -> str:
        envelope = json.loads(self.body)
        assert set(envelope) == {"errors"} and len(envelope["errors"]) == 1
        return str(envelope["errors"][0]["code"])


def send(running: RunningProxy, method: str, path: str) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, headers, body)
    finally:
        connection.close()


async def _row_counts(index: CacheIndex) -> dict[str, int]:
    counts = {}
    for table in ("blobs", "manifests", "tags", "documents", "upload_sessions"):
        async with index.db.execute(f"SELECT COUNT(*) FROM {table}") as cursor:
            row = await cursor.fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def assert_untouched(running: RunningProxy, fake: FakeGAR) -> None:
    cache = running.settings.cache.dir
    assert [p for p in (cache / "blobs").rglob("*") if p.is_file()] == []
    assert list((cache / "tmp").iterdir()) == []
    assert set(running.call(_row_counts(running.services.index)).values()) == {0}
    assert fake.count() == 0, fake.requests


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


@pytest.fixture
def running(fake: FakeGAR, proxy: ProxyFactory) -> RunningProxy:
    return proxy(
        fake.upstream,
        routing__resolve_locations="true",
        apis__artifact_registry=fake.url,
        routing__routes="proj=us",
        transport__retries="0",
    )


def name_paths(name: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/manifests/latest"),
        ("GET", f"/v2/{name}/manifests/{GOOD_DIGEST}"),
        ("GET", f"/v2/{name}/blobs/{GOOD_DIGEST}"),
        ("HEAD", f"/v2/{name}/blobs/{GOOD_DIGEST}"),
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/referrers/{GOOD_DIGEST}"),
    ]


def digest_paths(digest: str) -> list[tuple[str, str]]:
    # other/... has no route: resolving its location first would reach the metadata API.
    return [
        ("GET", f"/v2/other/repo/app/blobs/{digest}"),
        ("HEAD", f"/v2/other/repo/app/blobs/{digest}"),
        ("GET", f"/v2/other/repo/app/manifests/{digest}"),
        ("HEAD", f"/v2/other/repo/app/manifests/{digest}"),
        ("GET", f"/v2/other/repo/app/referrers/{digest}"),
    ]


def assert_error(answer: Answer, method: str, status: int, code: str) -> None:
    assert answer.status == status, (method, answer.status, answer.body[:300])
    assert answer.headers["docker-distribution-api-version"] == "registry/2.0"
    if method == "HEAD":
        assert answer.body == b""
    else:
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.code() == code


def test_invalid_names(fake: FakeGAR, running: RunningProxy) -> None:
    for name in BAD_NAMES.values():
        for method, path in name_paths(name):
            assert_error(send(running, method, path), method, 400, "NAME_INVALID")
    assert_untouched(running, fake)


def test_malformed_digests(fake: FakeGAR, running: RunningProxy) -> None:
    for digest in BAD_DIGESTS.values():
        for method, path in digest_paths(digest):
            assert_error(send(running, method, path), method, 400, "DIGEST_INVALID")
    assert_untouched(running, fake)


def test_invalid_tag(fake: FakeGAR, running: RunningProxy) -> None:
    for tag in ("-starts-with-dash", "t" * 129, "sp%20ace"):
        for method in ("GET", "HEAD"):
            answer = send(running, method, f"/v2/other/repo/app/manifests/{tag}")
            assert answer.status == 400
            if method == "GET":
                assert answer.code() in ("MANIFEST_INVALID", "TAG_INVALID")
    assert_untouched(running, fake)


def test_unknown_tags_and_blobs_cost_one_upstream_request_each(
    fake: FakeGAR, running: RunningProxy
) -> None:
    fake.put_image("us", "proj/repo/app", "1.0", build_image([make_layer()]))
    cases: list[tuple[str, str, str, int, Kind, dict[str, Any]]] = [
        ("GET", "/manifests/nope", "MANIFEST_UNKNOWN", 404, "manifest", {}),
        ("HEAD", "/manifests/nope-too", "MANIFEST_UNKNOWN", 404, "manifest", {}),
        ("GET", f"/manifests/{GOOD_DIGEST}", "MANIFEST_UNKNOWN", 404, "manifest", {}),
        ("GET", f"/blobs/{GOOD_DIGEST}", "BLOB_UNKNOWN", 404, "blob", {}),
        ("HEAD", f"/blobs/{OTHER_DIGEST}", "BLOB_UNKNOWN", 404, "blob", {}),
    ]
    for method, suffix, code, status, kind, _ in cases:
        fake.reset_counts()
        answer = send(running, method, f"/v2/proj/repo/app{suffix}")
        assert_error(answer, method, status, code)
        assert fake.count(kind=kind) == 1, (method, suffix)
        assert fake.count() == 1, fake.requests
        # Asked again within cache.negative_ttl: answered without upstream.
        assert_error(send(running, method, f"/v2/proj/repo/app{suffix}"), method, status, code)
        assert fake.count() == 1, fake.requests
    fake.reset_counts()
    no_repo = send(running, "GET", "/v2/proj/nothing/app/manifests/1.0")
    assert_error(no_repo, "GET", 404, "NAME_UNKNOWN")
    assert fake.count() == 1
    fake.reset_counts()
    assert_untouched(running, fake)


def test_unknown_routes_and_methods_get_oci_errors(fake: FakeGAR, running: RunningProxy) -> None:
    for path in ("/v2/proj/repo/app/nothing", "/nowhere", "/v2/proj/repo/app/blobs/"):
        answer = send(running, "GET", path)
        assert answer.status == 404
        assert answer.code() == "UNSUPPORTED"
    for method, path in (
        ("PATCH", "/v2/proj/repo/app/manifests/1.0"),
        ("DELETE", f"/v2/proj/repo/app/blobs/{GOOD_DIGEST}"),
        ("POST", "/v2/proj/repo/app/tags/list"),
    ):
        answer = send(running, method, path)
        assert answer.status == 405, (method, path, answer.status)
        assert answer.code() == "UNSUPPORTED"
    assert_untouched(running, fake)


def test_unexpected_exception_is_500_unknown_with_a_request_id(
    fake: FakeGAR, running: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals at /srv/cache")

    monkeypatch.setattr(running.services.manifests, "get", broken)
    answer = send(running, "GET", "/v2/proj/repo/app/manifests/1.0")
    assert answer.status == 500
    assert answer.code() == "UNKNOWN"
    message = json.loads(answer.body)["errors"][0]["message"]
    assert re.search(r"request id [0-9a-f]{12}", message), message
    for leak in (b"Traceback", b"secret", b"RuntimeError", b"/srv/cache"):
        assert leak not in answer.body
    head = send(running, "HEAD", "/v2/proj/repo/app/manifests/1.0")
    assert head.status == 500 and head.body == b""
    assert_untouched(running, fake)
