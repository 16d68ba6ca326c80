"""Blob misses whose upstream does not say how long the body is (chunked), or encodes it
(``Content-Encoding: gzip``), reach the client whole: a response without a known length
goes through the byte path, not the zero-copy one (which needs a Content-Length)."""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from proxy.oci.digest import Digest
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.servers import serve_in_thread

DATA = random.Random(11).randbytes(3 * 1024 * 1024 + 17)
DIGEST = str(Digest.of(DATA))
REPO = "proj/repo/app"


def upstream_app() -> Starlette:
    async def version(request: Request) -> Response:
        return JSONResponse({})

    async def blob(request: Request) -> Response:
        if request.path_params["digest"] != DIGEST:
            return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]}, 404)
        how = request.path_params["how"]
        if how == "gzip":
            body = gzip.compress(DATA, compresslevel=1)
            return Response(body, headers={"Content-Encoding": "gzip"})

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(DATA), 256 * 1024):
                yield DATA[start : start + 256 * 1024]

        return StreamingResponse(pieces())  # no Content-Length: chunked

    return Starlette(
        routes=[
            Route("/{how}/v2/", version),
            Route("/{how}/v2/{name:path}/blobs/{digest}", blob, methods=["GET", "HEAD"]),
        ]
    )


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_in_thread(upstream_app()) as url:
        yield url


@pytest.mark.parametrize("how", ["chunked", "gzip"])
def test_a_blob_of_unknown_length_reaches_the_client_whole(
    tmp_path: Path, upstream_url: str, how: str
) -> None:
    settings = proxy_settings(tmp_path, f"{upstream_url}/{how}")
    with run_proxy(settings) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as http:
        first = http.get(f"/v2/{REPO}/blobs/{DIGEST}")
        assert first.status_code == 200
        assert first.content == DATA
        assert "content-length" not in first.headers  # streamed as it arrived, length unknown
        again = http.get(f"/v2/{REPO}/blobs/{DIGEST}")  # a hit: known length, zero-copy
        assert again.content == DATA and again.headers["content-length"] == str(len(DATA))
        _check_cached(proxy)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _check_cached(proxy: RunningProxy) -> None:
    assert proxy.services.cache.size(Digest.parse(DIGEST)) == len(DATA)


def test_every_answer_is_counted_by_method_kind_and_status(
    tmp_path: Path, upstream_url: str
) -> None:
    settings = proxy_settings(tmp_path, f"{upstream_url}/chunked")
    with run_proxy(settings) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as http:
        for _ in range(3):
            assert http.get(f"/v2/{REPO}/blobs/{DIGEST}").status_code == 200
        assert http.head(f"/v2/{REPO}/manifests/bad:tag:x").status_code == 400
        assert http.get("/nowhere").status_code == 404
        sample = proxy.services.metrics.registry.get_sample_value
        total = "garproxy_requests_total"
        # Counted once the response is done on the server, a moment after the client has it.
        wait_for(lambda: sample(total, {"method": "GET", "kind": "other", "status": "404"}) == 1)
        assert sample(total, {"method": "GET", "kind": "blob", "status": "200"}) == 3
        assert sample(total, {"method": "HEAD", "kind": "manifest", "status": "400"}) == 1
        assert sample(total, {"method": "GET", "kind": "other", "status": "404"}) == 1
        count = sample("garproxy_request_duration_seconds_count", {"kind": "blob"})
        assert count == 3
