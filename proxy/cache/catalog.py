"""What this cache holds, read from the index: repositories seen and their cached tags.

A repository is "seen" once a tag of it was pulled or pushed through the proxy (the
tags table); a pull by digest alone leaves no repository name behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.cache.index import CacheIndex
from proxy.oci.names import location_of_host

# The tag's manifest and everything below it (an index's images, their config and
# layers), summed over what is cached: the bytes this tag holds on disk.
_TAG_SIZE = """
WITH RECURSIVE tree(d) AS (
    SELECT ? UNION SELECT child FROM manifest_refs JOIN tree ON manifest = tree.d)
SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE digest IN (SELECT d FROM tree))
     + (SELECT COALESCE(SUM(size), 0) FROM manifests
        WHERE body IS NOT NULL AND digest IN (SELECT d FROM tree))
"""


@dataclass(frozen=True, slots=True)
class CachedTag:
    repository: str  # as the index keys it: LOCATION-docker.pkg.dev/PROJECT/REPO/IMAGE
    tag: str
    digest: str
    size: int  # cached bytes under the tag's manifest
    fetched: float


def matches(repository: str, prefix: str) -> bool:
    """``prefix`` may leave out the GAR host: ``proj/repo`` matches
    ``us-docker.pkg.dev/proj/repo/app``."""
    if not prefix or repository.startswith(prefix):
        return True
    host, _, path = repository.partition("/")
    return location_of_host(host) is not None and path.startswith(prefix)


async def repositories(index: CacheIndex, prefix: str = "") -> list[str]:
    """Every repository with a cached tag, sorted (the catalog's lexical order)."""
    async with index.db.execute("SELECT DISTINCT repo FROM tags ORDER BY repo") as cursor:
        return [str(repo) async for (repo,) in cursor if matches(str(repo), prefix)]


async def cached_tags(index: CacheIndex, prefix: str = "") -> list[CachedTag]:
    async with index.db.execute(
        "SELECT repo, tag, digest, fetched FROM tags ORDER BY repo, tag"
    ) as cursor:
        rows = [row async for row in cursor if matches(str(row[0]), prefix)]
    found = []
    for repo, tag, digest, fetched in rows:
        async with index.db.execute(_TAG_SIZE, (digest,)) as cursor:
            total = await cursor.fetchone()
        size = int(total[0]) if total else 0
        found.append(CachedTag(str(repo), str(tag), str(digest), size, float(fetched)))
    return found
