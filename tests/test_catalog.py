"""What the cache holds: ``/v2/_catalog`` (paginated per the spec) and ``gar-proxy ls``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from proxy.oci import mediatypes as mt
from testkit.images import Image, build_image, build_index, make_layer
from testkit.proxyharness import proxy_settings, run_proxy
from testkit.proxyprocess import run_cli
from tests.conftest import FakeGarFactory

ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
REPOS = ["proj/repo/a", "proj/repo/b", "proj/other/c"]


def _pull(client: httpx.Client, repo: str, tag: str, image: Image) -> None:
    assert client.get(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT).status_code == 200
    for blob in image.blobs:
        assert client.get(f"/v2/{repo}/blobs/{blob.digest}").content == blob.data


def test_catalog_pages_and_ls_list_what_was_pulled(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> None:
    fake = fake_gar(auth="none")
    images = {repo: build_image([make_layer({repo: repo.encode() * 100})]) for repo in REPOS}
    for repo, image in images.items():
        fake.put_image("us", repo, "1.0", image)
    settings = proxy_settings(tmp_path, fake.upstream)
    with run_proxy(settings) as running, httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get("/v2/_catalog").json() == {"repositories": []}
        for repo, image in images.items():
            _pull(client, repo, "1.0", image)
        expected = sorted(f"us-docker.pkg.dev/{repo}" for repo in REPOS)
        assert client.get("/v2/_catalog").json()["repositories"] == expected
        first = client.get("/v2/_catalog", params={"n": 2})
        assert first.json()["repositories"] == expected[:2]
        link = first.headers["link"]
        assert link.endswith('>; rel="next"'), link
        second = client.get(link[1 : link.index(">")])
        assert second.json()["repositories"] == expected[2:]
        assert "link" not in second.headers
        bad = client.get("/v2/_catalog", params={"n": "many"})
        assert (bad.status_code, bad.json()["errors"][0]["code"]) == (
            400,
            "PAGINATION_NUMBER_INVALID",
        )
    upstream_calls = fake.count()
    listed = run_cli(tmp_path / "cache", fake.upstream, "ls", "proj/repo", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["repository"], r["tag"]) for r in rows] == [
        ("us-docker.pkg.dev/proj/repo/a", "1.0"),
        ("us-docker.pkg.dev/proj/repo/b", "1.0"),
    ]
    image = images["proj/repo/a"]
    assert rows[0]["digest"] == image.digest
    assert rows[0]["size"] == len(image.manifest) + sum(len(b.data) for b in image.blobs)
    table = run_cli(tmp_path / "cache", fake.upstream, "ls")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE", "FETCHED"]
    assert len(lines) == 4 and "us-docker.pkg.dev/proj/other/c" in lines[1]
    tag_column, size_end = lines[0].index("TAG"), lines[0].index("SIZE") + len("SIZE")
    for line in lines[1:]:  # aligned: tags start under TAG, sizes end under SIZE
        assert line[tag_column:].startswith("1.0 "), lines
        assert line[:size_end].endswith("KiB") or line[:size_end].endswith(" B"), lines
    assert fake.count() == upstream_calls  # ls reads the index only


def test_ls_counts_what_is_cached_under_a_multi_platform_tag(
    fake_gar: FakeGarFactory, tmp_path: Path
) -> None:
    """One platform of two pulled: the tag's size is that platform's bytes (and the
    index), not the index's sum over every platform."""
    fake = fake_gar(auth="none")
    amd = build_image([make_layer(size=100_000, seed=1)], architecture="amd64")
    arm = build_image([make_layer(size=300_000, seed=2)], architecture="arm64")
    index = build_index([amd, arm])
    fake.put_image("us", "proj/repo/multi", "1", index)
    settings = proxy_settings(tmp_path, fake.upstream)
    with run_proxy(settings) as running, httpx.Client(base_url=running.url, timeout=30) as client:
        assert client.get("/v2/proj/repo/multi/manifests/1", headers=ACCEPT).status_code == 200
        _pull(client, "proj/repo/multi", amd.digest, amd)
    listed = run_cli(tmp_path / "cache", fake.upstream, "ls", "--json")
    (row,) = json.loads(listed.stdout)
    cached = len(index.manifest) + len(amd.manifest) + sum(len(b.data) for b in amd.blobs)
    assert row["size"] == cached
    assert row["size"] < sum(len(b.data) for b in arm.blobs)


def test_ls_without_a_cache_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-cache-here"
    listed = run_cli(missing, "http://127.0.0.1:9", "ls")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == f"nothing cached: no cache at {missing}"
    assert not missing.exists()


def test_where_never_prints_none(tmp_path: Path) -> None:
    """A registry that is not Artifact Registry has no locations: the line says so."""
    shown = run_cli(tmp_path / "cache", "http://127.0.0.1:9", "where", "proj/repo")
    assert shown.returncode == 0, shown.stderr
    assert "None" not in shown.stdout
    assert shown.stdout.startswith("proj/repo: no location: names go to the upstream as they are")
