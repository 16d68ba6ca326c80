"""What a purge may remove: the digests below some roots that nothing else needs.

``gar-proxy purge --blobs`` forgets tags, then removes what only they reached. A
digest below the roots (the manifests the forgotten tags named, their children,
configs and layers, through ``manifest_refs``) is still needed when a remaining tag
names it, a pin holds it (``warm --pin``), or a manifest outside the purged set
references it; whatever such a digest references is needed too. The work is bounded
by the purged images, not by the cache: every query asks about the candidates only.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.cache.index import CacheIndex
from proxy.cache.rows import BATCH
from proxy.oci.digest import Digest


async def _pairs(index: CacheIndex, sql: str, keys: list[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        marks = ", ".join("?" * len(batch))
        async with index.db.execute(sql.format(marks=marks), batch) as cursor:
            found += [(str(a), str(b)) async for a, b in cursor]
    return found


async def _below(index: CacheIndex, roots: Iterable[str]) -> dict[str, set[str]]:
    """Every digest reachable from ``roots``, with the children of each."""
    children: dict[str, set[str]] = {}
    frontier = set(roots)
    while frontier:
        for digest in frontier:
            children.setdefault(digest, set())
        rows = await _pairs(
            index,
            "SELECT manifest, child FROM manifest_refs WHERE manifest IN ({marks})",
            sorted(frontier),
        )
        for manifest, child in rows:
            children[manifest].add(child)
        frontier = {child for _, child in rows if child not in children}
    return children


async def _held(index: CacheIndex, candidates: set[str]) -> set[str]:
    """Candidates a tag or a pin names, or a manifest outside the candidates lists."""
    keys = sorted(candidates)
    tagged = await _pairs(index, "SELECT digest, repo FROM tags WHERE digest IN ({marks})", keys)
    pinned = await _pairs(index, "SELECT digest, created FROM pins WHERE digest IN ({marks})", keys)
    parents = await _pairs(
        index, "SELECT child, manifest FROM manifest_refs WHERE child IN ({marks})", keys
    )
    held = {d for d, _ in tagged} | {d for d, _ in pinned}
    return held | {child for child, parent in parents if parent not in candidates}


async def unreferenced(index: CacheIndex, roots: Iterable[Digest]) -> set[Digest]:
    """The digests below ``roots`` (roots included) that nothing else needs."""
    children = await _below(index, (str(r) for r in roots))
    candidates = set(children)
    needed = await _held(index, candidates)
    frontier = set(needed)
    while frontier:  # what a needed manifest references is needed as well
        frontier = {c for d in frontier for c in children.get(d, ())} - needed
        needed |= frontier
    return {Digest.parse(d) for d in candidates - needed}


async def reaching(index: CacheIndex, kept: set[Digest], within: set[Digest]) -> set[Digest]:
    """The digests of ``within`` from which a ``kept`` one is reached: the manifests
    above a blob a purge had to keep (being read), kept with it so that a later purge
    (by digest) still finds it."""
    found = {str(d) for d in kept}
    inside = {str(d) for d in within}
    frontier = set(found)
    while frontier:
        rows = await _pairs(
            index, "SELECT manifest, child FROM manifest_refs WHERE child IN ({marks})",
            sorted(frontier),
        )  # fmt: skip
        frontier = {parent for parent, _ in rows if parent in inside} - found
        found |= frontier
    return {Digest.parse(d) for d in found}


async def cached_manifests(index: CacheIndex, digests: Iterable[Digest]) -> list[Digest]:
    """Which of ``digests`` are manifest rows (the rest are blobs only)."""
    keys = sorted(str(d) for d in digests)
    rows = await _pairs(
        index, "SELECT digest, media_type FROM manifests WHERE digest IN ({marks})", keys
    )
    return [Digest.parse(d) for d, _ in rows]
