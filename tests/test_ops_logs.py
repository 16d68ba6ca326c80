"""Logs an operator can use: one JSON line per request with what it did, no secrets.

The proxy runs as a real process with ``log_format=json`` at debug level (so the
upstream call lines are there too); every line it writes during a pull and a push
must parse as JSON with a millisecond timestamp and an offset, and no line may carry
the upstream password, the registry token bought with it, or an upload ``_state``.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import Fault
from testkit.images import build_image, make_layer, push_image
from testkit.proxyprocess import ProxyProcess
from tests.conftest import FakeGarFactory

REPO = "proj/repo/app"
TOKEN = "ya29.KNOWN-secret-token-4f1c"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
REQUEST_FIELDS = {
    "method", "route", "repository", "reference", "status", "bytes", "duration_ms",
    "cache", "upstream_calls", "request_id", "identity",
}  # fmt: skip


def _lines(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        if line.startswith("gar-proxy listening on"):  # the ready line, on stdout
            continue
        entries.append(json.loads(line))  # every other line is one JSON object
    return entries


def test_every_line_of_a_pull_is_json_with_the_request_fields_and_no_secret(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> None:
    fake = fake_gar(access_tokens={TOKEN}, registry_token_only=True, upload_state_query=True)
    image = build_image([make_layer({"a": b"1"}), make_layer(size=256 * 1024, seed=3)])
    fake.put_image("us", REPO, "1.0", image)
    env = {
        "GAR_PROXY_UPSTREAM_USERNAME": "oauth2accesstoken",
        "GAR_PROXY_UPSTREAM_PASSWORD": TOKEN,
        "GAR_PROXY_SERVER_LOG_FORMAT": "json",
        "GAR_PROXY_SERVER_LOG_LEVEL": "debug",
    }
    with ProxyProcess(tmp_path / "cache", fake.upstream, auth="basic", env=env) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            for _ in range(2):  # cold, then warm
                assert http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT).status_code == 200
                for blob in image.blobs:
                    assert http.get(f"/v2/{REPO}/blobs/{blob.digest}").content == blob.data
        pushed = build_image([make_layer({"pushed": b"2"})])
        push_image(proxy.url, "proj/repo/other", "2.0", pushed)
        with socket.create_connection(("127.0.0.1", proxy.port)) as probe:
            probe.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS ClientHello
            probe.recv(1024)
        proxy.stop()
        text = proxy.log_text()

    secrets = [TOKEN, base64.b64encode(f"oauth2accesstoken:{TOKEN}".encode()).decode()]
    secrets += list(fake.issued_tokens)  # the registry tokens the proxy bought
    for secret in secrets:
        assert secret not in text
    assert "_state" not in text
    entries = _lines(text)
    for entry in entries:
        assert TIMESTAMP.match(entry["time"]), entry
        assert entry["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR"}
    requests = [e for e in entries if e["message"] == "request" and e["route"] != "ops"]
    for entry in requests:
        assert entry.keys() >= REQUEST_FIELDS, entry
    blobs = [e for e in requests if e["route"] == "blob" and e["method"] == "GET"]
    assert [e["cache"] for e in blobs] == ["miss"] * 3 + ["hit"] * 3
    assert [e["upstream_calls"] > 0 for e in blobs] == [True] * 3 + [False] * 3
    first = blobs[0]
    assert first["repository"] == REPO and first["reference"] == str(image.blobs[0].digest)
    assert first["status"] == 200 and first["bytes"] == len(image.blobs[0].data)
    manifests = [e for e in requests if e["route"] == "manifest" and e["method"] == "GET"]
    assert [e["cache"] for e in manifests] == ["miss", "hit"]
    assert any(e["message"] == "upstream call" and e["severity"] == "DEBUG" for e in entries)
    assert any(e["route"] == "upload" for e in requests)
    assert len({e["request_id"] for e in requests}) == len(requests)
    probes = [e for e in entries if "Invalid HTTP request" in e["message"]]
    assert probes and all(e["severity"] == "DEBUG" for e in probes)
    assert not any(e["logger"] in ("httpx", "aiosqlite") for e in entries)


def test_a_failed_request_says_why_and_where_and_is_a_warning(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> None:
    """GAR failing: the request line carries the error the client got, the upstream's
    status, host and location, at warning; each retry's warning names the request, the
    repository and the host. A client's own mistake (a bad name, a missing tag) stays
    info, with its error code."""
    fake = fake_gar(auth="none")
    fake.put_image("us", REPO, "1.0", build_image([make_layer({"a": b"1"})]))
    fake.add_fault(Fault(kind="manifest", status=503, path=r"/manifests/1\.0$"))
    env = {"GAR_PROXY_SERVER_LOG_FORMAT": "json", "GAR_PROXY_TRANSPORT_RETRIES": "1"}
    upstream = fake.upstream.replace("http://", "http://user:pw-in-url@")
    with ProxyProcess(tmp_path / "cache", upstream, env=env) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            failed = http.get(f"/v2/{REPO}/manifests/1.0", headers=ACCEPT)
            missing = http.get(f"/v2/{REPO}/manifests/nope", headers=ACCEPT)
            invalid = http.get("/v2/Bad..Name/manifests/1", headers=ACCEPT)
        proxy.stop()
        text = proxy.log_text()
    assert (failed.status_code, missing.status_code, invalid.status_code) == (503, 404, 400)
    assert "pw-in-url" not in text
    entries = _lines(text)
    lines = {e.get("reference"): e for e in entries if e["message"] == "request"}
    line = lines["1.0"]
    assert line["severity"] == "WARNING" and line["status"] == 503
    assert line["error_code"] == "UNAVAILABLE" and "HTTP 503" in line["error"]
    host = fake.url.removeprefix("http://")
    assert (line["upstream_status"], line["upstream_host"], line["upstream_location"]) == (
        503, host, "us"
    )  # fmt: skip
    (retry,) = [e for e in entries if e["message"].startswith("upstream HTTP 503")]
    assert retry["severity"] == "WARNING" and retry["request_id"] == line["request_id"]
    assert (retry["repository"], retry["upstream_host"]) == (REPO, host)
    assert lines["nope"]["severity"] == "INFO" and lines["nope"]["error_code"] == "MANIFEST_UNKNOWN"
    assert lines["nope"]["upstream_status"] == 404
    (bad,) = [e for e in entries if e["message"] == "request" and e["status"] == 400]
    assert bad["severity"] == "INFO" and bad["error_code"] == "NAME_INVALID"
    assert "upstream_status" not in bad  # it never reached upstream
