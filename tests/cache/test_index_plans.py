"""The index's statements on paths whose cost must not grow with the cache: each
statement the index really runs (traced) is checked with EXPLAIN QUERY PLAN for a
full scan of a table that grows with the cache."""

from __future__ import annotations

from pathlib import Path

from proxy.cache.index import CacheIndex
from proxy.cache.manifest_rows import ManifestRow
from proxy.oci.digest import Digest

GROWING = ("blobs", "manifests", "manifest_refs", "tags", "repo_digests")


async def _plans(index: CacheIndex, statements: list[str]) -> dict[str, list[str]]:
    plans = {}
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE")):
            continue
        async with index.db.execute("EXPLAIN QUERY PLAN " + sql) as cursor:
            plans[sql] = [str(row[3]) async for row in cursor]
    return plans


def _full_scans(plans: dict[str, list[str]]) -> list[str]:
    """A ``SCAN t`` with no index of a growing table (the ordered walk of the access
    index that eviction stops after a batch is fine: ``USING INDEX``)."""
    return [
        f"{sql}: {step}"
        for sql, steps in plans.items()
        for step in steps
        if step.split()[:2] in (["SCAN", table] for table in GROWING) and "INDEX" not in step
    ]


async def test_eviction_and_manifest_removal_scan_no_growing_table(tmp_path: Path) -> None:
    index = await CacheIndex.open(tmp_path / "index.sqlite3")
    try:
        manifest = Digest.of(b"manifest")
        children = [Digest.of(b"config"), Digest.of(b"layer")]
        for child in children:
            await index.blobs.add(child, 10)
        await index.manifests.put(
            ManifestRow(manifest, "application/json", 8, b"manifest"), children
        )
        await index.tags.put("proj/repo/app", "v1", manifest, "application/json")
        await index.pins.add([manifest])
        statements: list[str] = []
        await index.db.set_trace_callback(statements.append)
        assert await index.blobs.eviction_candidates() == []  # pinned, with its children
        await index.manifests.remove([manifest])
        await index.blobs.remove(children)
        await index.db.set_trace_callback(None)  # type: ignore[arg-type]  # None: off
        plans = await _plans(index, statements)
        assert len(plans) >= 4, statements
        assert _full_scans(plans) == []
    finally:
        await index.close()
