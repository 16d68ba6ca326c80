"""GAR's signed paths: blob downloads followed, credentials and quota per hop, and no
signed path or opaque session string in any log line or response.

GAR sends a blob GET on to ``/artifacts-downloads/.../<signature>`` and hands out
upload sessions at ``/artifacts-uploads/.../<opaque>``; both are served without
``Authorization`` (docs/GAR.md), so either string is a credential for anyone who reads
it. The proxy follows the download itself (credentials only on the upstream's origin,
each hop there charged to the read quota), asks again for a signature that was refused,
and never names either path: not in a log line (at debug level), an error, a header, the
status page, ``/readyz``, ``/metrics`` or ``config check``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from proxy.services.blob_copy import ATTEMPTS
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import build_image, make_layer, push_image
from testkit.proxyharness import RunningProxy
from testkit.proxyprocess import ProxyProcess, run_cli
from testkit.servers import serve_in_thread
from tests.conftest import FakeGarFactory, ProxyFactory

TOKEN = "ya29.signed-paths"
REPO = "proj/repo/app"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
SIGNED = re.compile(r"artifacts-(?:downloads|uploads)/")


def blob(size: int, seed: int) -> tuple[bytes, str]:
    data = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32))
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    fake = fake_gar(access_tokens={TOKEN})
    for location, repository in (("us", "repo"), ("us", "src"), ("europe", "src")):
        fake.add_repository(location, "proj", repository)
    return fake


def authed(proxy: ProxyFactory, fake: FakeGAR) -> RunningProxy:
    return proxy(
        fake.upstream, upstream__auth="basic", upstream__username="oauth2accesstoken",
        upstream__password=TOKEN,
    )  # fmt: skip


def charged(running: RunningProxy) -> dict[str, int]:
    counts = running.services.upstream.limits.charged
    return {bucket: n for (_, location, bucket), n in counts.items() if location == "us"}


# --------------------------------------------------------------------------- downloads


def test_a_blob_get_follows_the_signed_download_with_credentials_on_gars_host_only(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    running = authed(proxy, fake)
    data, _ = blob(200_000, 1)
    digest = fake.put_blob("us", REPO, data)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.head(f"/v2/{REPO}/blobs/{digest}").status_code == 200  # token traded
        before = charged(running)
        assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data
        after = charged(running)
    # The GET and its hop on GAR's host: two requests charged to the read quota.
    assert after["read"] - before.get("read", 0) == 2 and "write" not in after
    assert fake.count("GET", "blob") == 1 and fake.count("GET", "download") == 1
    assert fake.download_auth == [True]  # the same host that issued the token


def test_a_download_on_another_host_gets_no_credentials_and_no_quota(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    running = authed(proxy, fake)
    data, _ = blob(50_000, 2)
    digest = fake.put_blob("us", REPO, data)
    with serve_in_thread(fake) as storage, httpx.Client(base_url=running.url) as client:
        fake.download_host = storage  # a storage host of its own, as other registries do
        assert client.head(f"/v2/{REPO}/blobs/{digest}").status_code == 200  # token traded
        before = charged(running).get("read", 0)
        assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data
        assert charged(running)["read"] - before == 1  # the hop elsewhere is not GAR's
    assert fake.download_auth == [False]


def test_a_refused_signature_is_asked_for_again_once(fake: FakeGAR, proxy: ProxyFactory) -> None:
    running = authed(proxy, fake)
    data, _ = blob(50_000, 3)
    digest = fake.put_blob("us", REPO, data)
    fake.expire_next_downloads(1)  # expired by the time it is used (403)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.head(f"/v2/{REPO}/blobs/{digest}").status_code == 200  # token traded
        fake.reset_counts()
        assert client.get(f"/v2/{REPO}/blobs/{digest}").content == data
        fake.expire_next_downloads(2)  # again and again: the client is told, no loop
        other, _ = blob(5_000, 4)
        refused = client.get(f"/v2/{REPO}/blobs/{fake.put_blob('us', REPO, other)}")
    assert refused.status_code == 403
    assert not SIGNED.search(refused.text)
    assert fake.count("GET", "blob") == 4 and fake.count("GET", "download") == 4


# --------------------------------------------------------------------------- quotas


def test_every_request_of_a_push_is_charged_to_the_right_bucket(
    fake: FakeGAR, proxy: ProxyFactory
) -> None:
    running = authed(proxy, fake)
    data, digest = blob(100_000, 5)
    with httpx.Client(base_url=running.url, timeout=30) as client:
        client.delete(client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"])  # token
        before = charged(running)
        location = client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
        location = client.patch(location, content=iter([data])).headers["location"]
        assert client.put(location, params={"digest": digest}).status_code == 201
        after = charged(running)
        # POST, the streamed PATCH, the empty PUT: three requests, each a write.
        assert after["write"] - before.get("write", 0) == 3
        assert after["read"] - before.get("read", 0) == 3
        assert client.head(f"/v2/{REPO}/blobs/{digest}").status_code == 200  # from the cache
        assert charged(running) == after


# --------------------------------------------------------------------------- never named


def session(client: httpx.Client, seen: list[str], fake: FakeGAR) -> None:
    """What a busy client does: pulls, every upload pattern, mounts, a cancel, a wrong
    digest, a manifest push; every response kept (status, headers, body)."""

    def keep(response: httpx.Response) -> httpx.Response:
        seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    image = build_image([make_layer(size=80_000, seed=6), make_layer(seed=7)])
    fake.put_image("us", "proj/src/img", "v1", image)
    keep(client.get("/v2/proj/src/img/manifests/v1", headers=ACCEPT))
    for item in image.blobs:
        keep(client.get(f"/v2/proj/src/img/blobs/{item.digest}"))
        keep(client.head(f"/v2/proj/src/img/blobs/{item.digest}"))
    uploads = f"/v2/{REPO}/blobs/uploads/"
    for seed in range(3):
        data, digest = blob(90_000, 10 + seed)
        location = keep(client.post(uploads)).headers["location"]
        if seed == 0:  # docker's way
            location = keep(client.patch(location, content=iter([data]))).headers["location"]
            keep(client.get(location))
            keep(client.put(location, params={"digest": digest}))
        elif seed == 1:  # chunks
            for start in (0, 45_000):
                part = data[start : start + 45_000]
                headers = {"Content-Range": f"{start}-{start + len(part) - 1}"}
                keep(client.patch(location, content=part, headers=headers))
            keep(client.put(location, params={"digest": "sha256:" + "0" * 64}))  # wrong
            keep(client.post(uploads, params={"digest": digest}, content=data))
        else:  # POST + PUT, and a cancelled session
            keep(client.put(location, params={"digest": digest}, content=data))
            keep(client.delete(keep(client.post(uploads)).headers["location"]))
    europe, _ = blob(20_000, 20)
    europe_digest = fake.put_blob("europe", "proj/src/far", europe)
    keep(client.post(uploads, params={"mount": europe_digest,
                                      "from": "europe-docker.pkg.dev/proj/src/far"}))  # fmt: skip
    keep(client.post(uploads, params={"mount": image.layers[0].digest, "from": "proj/src/img"}))
    push_image(str(client.base_url).rstrip("/"), REPO, "v2", image)
    keep(client.get(f"/v2/{REPO}/manifests/v2", headers=ACCEPT))
    keep(client.patch(f"{uploads}{'0' * 32}", content=b"x"))
    for page in ("/readyz", "/healthz", "/metrics", "/_gar-proxy/status"):
        keep(client.get(page))


def assert_never_named(texts: list[str], secrets: list[str]) -> None:
    assert secrets, "the fake handed out no signed path: the test tests nothing"
    for text in texts:
        found = SIGNED.search(text)
        assert found is None, text[max(found.start() - 200, 0) : found.end() + 200]
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"an opaque string in: {text[:300]}"


@pytest.fixture
def served(fake: FakeGAR) -> Iterator[str]:
    yield fake.upstream


def test_no_signed_path_reaches_a_log_line_or_a_response(
    fake: FakeGAR, served: str, tmp_path: Path
) -> None:
    env = {
        "GAR_PROXY_SERVER_LOG_LEVEL": "debug",
        "GAR_PROXY_UPSTREAM_USERNAME": "oauth2accesstoken",
        "GAR_PROXY_UPSTREAM_PASSWORD": TOKEN,
    }
    cache = tmp_path / "cache"
    seen: list[str] = []
    with ProxyProcess(cache, served, auth="basic", env=env) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=60) as client:
            session(client, seen, fake)
        logs = proxy.log_text()
    checked = run_cli(cache, served, "config", "check", env=env)
    secrets = [*fake.upload_opaques(), *fake.download_opaques()]
    assert fake.count("GET", "download") >= 3 and len(fake.upload_opaques()) >= 5
    assert "upstream call" in logs  # debug lines were written, and read here
    assert_never_named([logs, checked.stdout, checked.stderr, *seen], secrets)


def test_a_download_cut_short_is_reported_without_its_signature(
    fake: FakeGAR, served: str, tmp_path: Path
) -> None:
    data, _ = blob(300_000, 30)
    digest = fake.put_blob("us", REPO, data)
    fake.add_fault(Fault(kind="blob", truncate_at=100_000, times=1 + 3))  # and retries
    env = {"GAR_PROXY_UPSTREAM_USERNAME": "oauth2accesstoken", "GAR_PROXY_UPSTREAM_PASSWORD": TOKEN}
    env["GAR_PROXY_SERVER_LOG_LEVEL"] = "debug"
    seen: list[str] = []
    with ProxyProcess(tmp_path / "cache", served, auth="basic", env=env) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=60) as client:
            try:
                got = client.get(f"/v2/{REPO}/blobs/{digest}")
                seen.append(f"{got.status_code} {dict(got.headers)} {got.text}")
            except httpx.HTTPError as error:  # the body cut short, visibly
                seen.append(str(error))
        logs = proxy.log_text()
    assert fake.count("GET", "download") >= 1
    assert "blobs/" + digest in logs  # the failure is logged, named by the blob
    assert_never_named([logs, *seen], fake.download_opaques())


def test_an_upload_write_cut_short_is_reported_without_its_session(
    fake: FakeGAR, served: str, tmp_path: Path
) -> None:
    data, digest = blob(200_000, 31)
    fake.cut_next_write(after=50_000, times=ATTEMPTS)
    env = {"GAR_PROXY_UPSTREAM_USERNAME": "oauth2accesstoken", "GAR_PROXY_UPSTREAM_PASSWORD": TOKEN}
    env["GAR_PROXY_SERVER_LOG_LEVEL"] = "debug"
    seen: list[str] = []
    with ProxyProcess(tmp_path / "cache", served, auth="basic", env=env) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=60) as client:
            uploads = f"/v2/{REPO}/blobs/uploads/"
            failed = client.post(uploads, params={"digest": digest}, content=data)
            seen.append(f"{failed.status_code} {dict(failed.headers)} {failed.text}")
        logs = proxy.log_text()
    assert failed.status_code == 502 and "upstream upload session" in failed.text
    assert_never_named([logs, *seen], fake.upload_opaques())
