"""``refresh`` and ``purge`` on demand: through the admin paths of a running proxy, and
from the CLI, on the cache directory or (when a proxy has it open) through that proxy.

``refresh`` follows a tag that moved upstream now, whatever its TTL (and warns when
the tag was immutable); ``purge --blobs`` frees what only the purged tags used,
never a blob being read or filled, or one another tag still needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.clock import ManualClock
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import Image, build_image, make_layer
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.proxyprocess import run_cli
from tests.auth.test_access_control import ALICE, access_files
from tests.conftest import FakeGarFactory

REPO = "proj/repo/app"
KEY = f"us-docker.pkg.dev/{REPO}"
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
POLICIES = json.dumps([{"tag": r"v\d+\.\d+\.\d+", "immutable": True}])


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    return fake_gar(auth="none")


def start(tmp_path: Path, fake: FakeGAR, **keys: Any) -> Any:
    settings = proxy_settings(tmp_path, fake.upstream, **keys)
    return run_proxy(settings, clock=ManualClock())


def digest_of(http: httpx.Client, tag: str, repo: str = REPO) -> str:
    answer = http.get(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT)
    assert answer.status_code == 200, answer.text
    return answer.headers["docker-content-digest"]


def image(name: str, *layers: bytes) -> Image:
    return build_image([make_layer({name: name.encode()}), *layers])


# ------------------------------------------------------------ refresh


def test_refresh_follows_a_moved_tag_now_and_warns_for_an_immutable_one(
    fake: FakeGAR, tmp_path: Path
) -> None:
    old, new = image("old"), image("new")
    for tag in ("1.0", "v1.0.0"):
        fake.put_image("us", REPO, tag, old)
    with (
        start(tmp_path, fake, cache__tag_ttl="1h", cache__tag_policies=POLICIES) as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as http,
    ):
        assert digest_of(http, "1.0") == digest_of(http, "v1.0.0") == old.digest
        for tag in ("1.0", "v1.0.0"):
            fake.put_image("us", REPO, tag, new)  # moved upstream; a tag policy says never
        fake.reset_counts()
        assert digest_of(http, "1.0") == old.digest  # within the TTL: not asked
        assert fake.count() == 0
        refreshed = http.post(f"/_gar-proxy/refresh/{REPO}:1.0")
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json() == {
            "repository": KEY,
            "tags": [
                {"tag": "1.0", "before": old.digest, "after": new.digest, "changed": True,
                 "immutable": False},
            ],
        }  # fmt: skip
        assert (fake.count("HEAD", "manifest"), fake.count("GET", "manifest")) == (1, 1)
        assert digest_of(http, "1.0") == new.digest  # at once, without upstream
        assert digest_of(http, "v1.0.0") == old.digest
        every = http.post(f"/_gar-proxy/refresh/{REPO}").json()  # no tag: every cached one
        assert [(t["tag"], t["changed"]) for t in every["tags"]] == [
            ("1.0", False),
            ("v1.0.0", True),
        ]
        assert every["tags"][1]["immutable"] and every["tags"][1]["warning"]
        assert digest_of(http, "v1.0.0") == new.digest
        assert (fake.count("HEAD", "manifest"), fake.count("GET", "manifest")) == (3, 1)
        metric = proxy.services.metrics.registry.get_sample_value
        assert metric("garproxy_tag_revalidations_total", {"trigger": "refresh",
                                                           "outcome": "changed"}) == 2  # fmt: skip
        by_digest = http.post(f"/_gar-proxy/refresh/{REPO}@{old.digest}")
        assert by_digest.status_code == 400
        assert "never changes" in by_digest.json()["errors"][0]["message"]
        unknown = http.post("/_gar-proxy/refresh/proj/repo/nothing:1")
        assert unknown.status_code == 404
        assert unknown.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


# ------------------------------------------------------------ purge


def test_purge_blobs_frees_what_only_the_tag_used_but_not_a_blob_in_use(
    fake: FakeGAR, tmp_path: Path
) -> None:
    # 32 MiB each: more than loopback socket buffers hold, so a client that has not
    # read its body keeps the server's reader open (the blob is in use, whatever the
    # timing); the fill of the second is slowed so it is usually still running.
    shared = make_layer({"shared": b"s" * 5000})
    reading = make_layer(size=32 << 20, seed=7)  # cached: a client reads it slowly
    filling = make_layer(size=32 << 20, seed=8)  # not cached yet: filled during the purge
    app = build_image([make_layer({"only": b"app"}), shared, reading, filling])
    other = build_image([make_layer({"only": b"other"}), shared])
    fake.put_image("us", REPO, "1.0", app)
    fake.put_image("us", "proj/repo/other", "1.0", other)
    only, _, big, cold = (Digest.parse(b.digest) for b in app.layers)
    with (
        start(tmp_path, fake) as proxy,
        httpx.Client(base_url=proxy.url, timeout=60) as http,
    ):
        cache = proxy.services.cache
        digest_of(http, "1.0")
        digest_of(http, "1.0", "proj/repo/other")
        for repo, blob in [(REPO, b) for b in (*app.layers[:3], app.config)] + [
            ("proj/repo/other", b) for b in other.blobs
        ]:
            assert http.get(f"/v2/{repo}/blobs/{blob.digest}").status_code == 200
        before = proxy.services.index.blobs.total_bytes
        fake.add_fault(Fault(method="GET", path=f"/blobs/{cold}$", slow_body=0.005))
        with (
            http.stream("GET", f"/v2/{REPO}/blobs/{big}") as slow_read,
            http.stream("GET", f"/v2/{REPO}/blobs/{cold}") as fill,
        ):
            assert slow_read.status_code == fill.status_code == 200
            # Both in use: one being read, the other being filled (or, filled already,
            # followed by a client that has not read it).
            assert cache.in_use(big) and cache.in_use(cold)
            purged = http.post(f"/_gar-proxy/purge/{REPO}:1.0", params={"blobs": "true"})
            assert purged.status_code == 200, purged.text
            assert b"".join(slow_read.iter_bytes()) == app.layers[2].data
            assert b"".join(fill.iter_bytes()) == app.layers[3].data
        answer = purged.json()
        assert answer["tags"] == ["1.0"]
        gone = {only, Digest.parse(app.config.digest)}
        assert answer["blobs"] == 2
        assert answer["freed"] == app.layers[0].size + app.config.size
        assert answer["manifests"] == 0  # the manifest stays above the blob being read
        assert all(cache.size(d) is None for d in gone)
        assert cache.size(big) == len(app.layers[2].data)  # being read: kept
        assert cache.size(cold) == len(app.layers[3].data)  # the fill finished, cached
        assert cache.size(Digest.parse(app.layers[1].digest)) is not None  # other:1.0 uses it
        total = proxy.services.index.blobs.total_bytes
        assert total == before - answer["freed"] + app.layers[3].size  # freed; the fill added
        assert proxy.call(proxy.services.index.tags.get(KEY, "1.0")) is None
        # Nobody reads it now: purging the manifest by digest finishes the job.
        again = http.post(f"/_gar-proxy/purge/{REPO}@{app.digest}", params={"blobs": "1"})
        assert again.json()["manifests"] == 1 and again.json()["blobs"] == 2  # big and cold
        assert cache.size(big) is None and cache.size(cold) is None
        fake.reset_counts()
        # Everything of other:1.0 is still served from the cache.
        assert digest_of(http, "1.0", "proj/repo/other") == other.digest
        for blob in (*other.layers, other.config):
            got = http.get(f"/v2/proj/repo/other/blobs/{blob.digest}")
            assert hashlib.sha256(got.content).hexdigest() == blob.digest.split(":")[1]
        assert fake.count() == 0
        bad = http.post(f"/_gar-proxy/purge/{REPO}:1.0", params={"blobs": "maybe"})
        assert bad.status_code == 400


def test_purge_without_blobs_forgets_the_tag_only(fake: FakeGAR, tmp_path: Path) -> None:
    one = image("one")
    fake.put_image("us", REPO, "1.0", one)
    fake.put_image("us", REPO, "2.0", one)
    with (
        start(tmp_path, fake, cache__tag_ttl="1h") as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as http,
    ):
        for tag in ("1.0", "2.0"):
            digest_of(http, tag)
        for blob in one.blobs:
            http.get(f"/v2/{REPO}/blobs/{blob.digest}")
        purged = http.post(f"/_gar-proxy/purge/{REPO}@{one.digest}").json()
        assert purged["tags"] == ["1.0", "2.0"] and purged["blobs"] == 0
        fake.reset_counts()
        assert digest_of(http, "1.0") == one.digest  # asked upstream again
        assert fake.count("GET", "manifest") == 1
        assert all(proxy.services.cache.size(Digest.parse(b.digest)) for b in one.blobs)


def test_admin_paths_need_an_admin_identity_when_client_auth_is_on(
    fake: FakeGAR, tmp_path: Path
) -> None:
    fake.put_image("us", REPO, "1.0", image("auth"))
    with start(tmp_path, fake, **access_files(tmp_path)) as proxy:
        url = f"{proxy.url}/_gar-proxy/purge/{REPO}:1.0"
        assert httpx.post(url).status_code == 401
        assert httpx.post(url, headers={"Authorization": "Bearer ci-token-1"}).status_code == 403
        assert httpx.post(url, headers=ALICE).status_code == 200


# ------------------------------------------------------------ the CLI


def _ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def test_cli_refresh_and_purge_on_the_cache_directory(fake: FakeGAR, tmp_path: Path) -> None:
    old, new = image("cli-old"), image("cli-new")
    fake.put_image("us", REPO, "1.0", old)
    cache = tmp_path / "cache"
    _ok(run_cli(cache, fake.upstream, "warm", f"{REPO}:1.0"))
    fake.put_image("us", REPO, "1.0", new)
    refreshed = _ok(run_cli(cache, fake.upstream, "refresh", f"{REPO}:1.0"))
    assert f"{KEY}:1.0  {old.digest} -> {new.digest}  changed" in refreshed

    def files() -> set[str]:
        return {p.name for p in (cache / "blobs").rglob("*") if p.is_file()}

    assert {b.digest.split(":")[1] for b in old.blobs} <= files()
    purged = _ok(run_cli(cache, fake.upstream, "purge", "--blobs", f"{REPO}@{old.digest}"))
    assert "forgot 0 tag(s)" in purged and f"removed 1 manifest(s) and {len(old.blobs)}" in purged
    assert not {b.digest.split(":")[1] for b in old.blobs} & files()
    as_json = json.loads(_ok(run_cli(cache, fake.upstream, "purge", "--json", f"{REPO}")))
    assert as_json["tags"] == ["1.0"]
    failed = run_cli(cache, fake.upstream, "refresh", "proj/repo/nothing:1")
    assert failed.returncode == 1 and "not found upstream" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_cli_asks_the_running_proxy_that_has_the_cache_open(fake: FakeGAR, tmp_path: Path) -> None:
    old, new = image("run-old"), image("run-new")
    fake.put_image("us", REPO, "1.0", old)
    with (
        start(tmp_path, fake, cache__tag_ttl="1h") as proxy,
        httpx.Client(base_url=proxy.url, timeout=30) as http,
    ):
        assert digest_of(http, "1.0") == old.digest
        fake.put_image("us", REPO, "1.0", new)
        listen = {"GAR_PROXY_SERVER_LISTEN": proxy.url.removeprefix("http://")}
        result = run_cli(tmp_path / "cache", fake.upstream, "refresh", f"{REPO}:1.0", env=listen)
        out = _ok(result)
        assert f"asking the proxy at {proxy.url}" in out
        assert f"{old.digest} -> {new.digest}  changed" in out
        assert digest_of(http, "1.0") == new.digest  # the running proxy's memory moved
        purged = run_cli(
            tmp_path / "cache", fake.upstream, "purge", "--proxy", proxy.url, f"{REPO}:1.0"
        )
        assert "forgot 1 tag(s)" in _ok(purged)
        assert proxy.call(proxy.services.index.tags.get(KEY, "1.0")) is None
