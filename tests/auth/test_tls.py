"""The TLS listener: certificates re-read when the files change; blobs over TLS."""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path

import httpx
import trustme
from starlette.types import Receive, Scope, Send

from proxy.auth.tls import ReloadingCertificate
from proxy.clock import ManualClock
from proxy.config import load_settings
from testkit.images import build_image, make_layer
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.proxyprocess import ProxyProcess
from testkit.servers import ThreadedServer
from tests.conftest import FakeGarFactory


async def _empty(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _write(cert: trustme.LeafCert, directory: Path) -> tuple[Path, Path]:
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    return directory / "cert.pem", directory / "key.pem"


def _served_cert(port: int, ca: trustme.CA) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def test_a_renewed_certificate_is_served_to_new_connections(tmp_path: Path) -> None:
    ca = trustme.CA()
    first, second = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    cert, key = _write(first, tmp_path)
    overrides = {"tls.cert_file": str(cert), "tls.key_file": str(key), "tls.reload_interval": "30"}
    settings = load_settings(None, env={"HOME": str(tmp_path)}, overrides=overrides)
    clock = ManualClock()
    reloading = ReloadingCertificate(settings.tls, clock)
    server = ThreadedServer(_empty, ssl_context=reloading.listener).start()
    try:
        assert _served_cert(server.port, ca) == _der(first)
        _write(second, tmp_path)
        assert _served_cert(server.port, ca) == _der(first)  # not looked at yet
        clock.advance(31)
        assert _served_cert(server.port, ca) == _der(second)
        key.write_text("half-written")  # a renewal caught mid-write keeps the old pair
        clock.advance(31)
        assert _served_cert(server.port, ca) == _der(second)
        assert reloading.reloads == 1
    finally:
        server.stop()


def test_blobs_over_tls_arrive_whole(fake_gar: FakeGarFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(ca.issue_cert("127.0.0.1"), tmp_path)
    fake = fake_gar(auth="none")
    layer = make_layer(size=3 << 20, seed=9)
    fake.put_image("us", "proj/repo/app", "v1", build_image([layer]))
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    settings = proxy_settings(
        tmp_path, fake.upstream, tls__cert_file=str(cert), tls__key_file=str(key)
    )
    with run_proxy(settings) as proxy, ca.cert_pem.tempfile() as ca_file:
        assert proxy.url.startswith("https://")
        url = f"{proxy.url}/v2/proj/repo/app/blobs/{digest}"
        for _ in range(2):  # a fill, then a hit from the cache (zero-copy is off on TLS)
            answer = httpx.get(url, verify=ssl.create_default_context(cafile=ca_file))
            assert answer.status_code == 200
            assert hashlib.sha256(answer.content).hexdigest() == digest.removeprefix("sha256:")


def test_serve_listens_with_tls(fake_gar: FakeGarFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(ca.issue_cert("127.0.0.1"), tmp_path)
    env = {"GAR_PROXY_TLS_CERT_FILE": str(cert), "GAR_PROXY_TLS_KEY_FILE": str(key)}
    with (
        ProxyProcess(tmp_path / "cache", fake_gar(auth="none").upstream, env=env) as proxy,
        ca.cert_pem.tempfile() as ca_file,
    ):
        assert proxy.url.startswith("https://")
        answer = httpx.get(f"{proxy.url}/v2/", verify=ssl.create_default_context(cafile=ca_file))
        assert answer.status_code == 200
