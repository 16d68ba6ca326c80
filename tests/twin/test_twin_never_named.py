"""No signed path, session URL or opaque string of the twin's reaches a log line (at
debug level), a response, ``/metrics`` or the status page, whatever form GAR gives
them: relative or absolute sessions, a session URL whose secret is its query
(``?upload_id=``), downloads on a storage host signed in the query (``X-Goog-Signature``)
or on GAR's own (docs/GAR.md U3, D2), and faults that make the proxy name what failed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar_twin import GarTwin
from testkit.fakes.gar_twin_wire import Knobs
from testkit.images import build_image, make_layer, push_image
from testkit.proxyprocess import ProxyProcess
from tests.twin.conftest import TOKEN, assert_never_named

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
NAME = "proj/repo/app"
FORMS: dict[str, dict[str, Any]] = {
    "as-recorded": {},
    "query-sessions-storage-downloads": {
        "upload_location": "query", "download_location": "storage", "download_status": 307,
        "session_auth": True, "patch_location": "new",
    },
    "absolute-everything": {"upload_location": "absolute", "download_location": "absolute",
                            "head_redirects": True},
}  # fmt: skip


def busy_client(client: httpx.Client, twin: GarTwin, seen: list[str]) -> None:
    """Pulls, every upload pattern, a wrong digest, a cancel, faults on each hop."""

    def keep(response: httpx.Response) -> httpx.Response:
        seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    image = build_image([make_layer(size=120_000, seed=61)])
    twin.put_image(NAME, "v1", image)
    keep(client.get(f"/v2/{NAME}/manifests/v1", headers=ACCEPT))
    layer = image.layers[0]
    twin.fail("download", 200, cut_after=10_000, times=1)
    twin.fail("storage", 200, cut_after=10_000, times=1)
    keep(client.get(f"/v2/{NAME}/blobs/{layer.digest}"))
    keep(client.head(f"/v2/{NAME}/blobs/{image.config.digest}"))
    uploads = f"/v2/{NAME}/blobs/uploads/"
    for seed in range(3):
        data = hashlib.sha256(bytes([seed])).digest() * 3000
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location = keep(client.post(uploads)).headers["location"]
        if seed == 0:
            twin.fail("session", 503, method="PUT", times=1)
            location = keep(client.patch(location, content=iter([data]))).headers["location"]
            keep(client.get(location))
            keep(client.put(location, params={"digest": digest}))
        elif seed == 1:
            keep(client.put(location, params={"digest": "sha256:" + "1" * 64}, content=data))
        else:
            twin.fail("session", 200, method="PUT", cut_after=0, times=1)
            keep(client.put(location, params={"digest": digest}, content=data))
            keep(client.delete(keep(client.post(uploads)).headers["location"]))
    push_image(str(client.base_url).rstrip("/"), NAME, "v2", image)
    for page in ("/metrics", "/_gar-proxy/status", "/readyz"):
        keep(client.get(page))


@pytest.mark.parametrize("form", FORMS)
def test_no_signed_path_or_session_reaches_a_log_or_a_response(form: str, tmp_path: Path) -> None:
    twin = GarTwin(Knobs(**FORMS[form]), access_tokens={TOKEN})
    twin.add_repository("proj/repo")
    env = {
        "GAR_PROXY_SERVER_LOG_LEVEL": "debug",
        "GAR_PROXY_UPSTREAM_USERNAME": "oauth2accesstoken",
        "GAR_PROXY_UPSTREAM_PASSWORD": TOKEN,
    }
    seen: list[str] = []
    with twin.serve(), ProxyProcess(tmp_path / "cache", twin.url, auth="basic", env=env) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=60) as client:
            busy_client(client, twin, seen)
        logs = proxy.log_text()
    assert "upstream call" in logs  # debug lines were written, and read here
    assert twin.count("GET", "download") + twin.count("GET", "storage") >= 2
    assert len(twin.opaques()) >= 6
    assert_never_named([logs, *seen], twin)
