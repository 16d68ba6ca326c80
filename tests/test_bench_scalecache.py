"""The scale scenario's generated cache is an honest one: every file hashes to its
name, files and rows agree (the proxy's first start reconciles and changes nothing),
and a proxy on it answers blob and tag HEADs without its upstream."""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.client import ACCEPT
from bench.scalecache import generate
from testkit.proxyprocess import ProxyProcess, run_cli

DEAD_UPSTREAM = "http://127.0.0.1:9"  # anything that needed upstream would fail


def test_a_generated_cache_verifies_and_is_served_without_upstream(tmp_path: Path) -> None:
    cache = generate(tmp_path / "cache", blobs=300, tags=40)
    verified = run_cli(cache.root, DEAD_UPSTREAM, "verify")
    assert verified.returncode == 0, verified.stderr
    assert "checked 300 blobs" in verified.stdout + verified.stderr
    with ProxyProcess(cache.root, DEAD_UPSTREAM) as proxy, httpx.Client(timeout=10) as client:
        for path in (cache.blob_paths[0], cache.blob_paths[-1], *cache.tag_paths[:3]):
            answer = client.head(proxy.url + path, headers={"Accept": ACCEPT})
            assert answer.status_code == 200, path
        assert "cache recovery" not in proxy.log_text()  # nothing to drop, adopt or remove
    assert (cache.root / "clean.json").exists()
