"""``refresh`` and ``purge``: an operator's commands on cached tags, as JSON-ready dicts
for the CLI (``gar-proxy refresh|purge``) and the admin paths (``/_gar-proxy/...``).

- ``refresh IMAGE[:TAG]`` asks upstream now, whatever the TTL or tag policy, and
  follows it (``TagRevalidations.refresh``): old -> new digest. An immutable tag is
  checked too; if upstream moved it the cache follows and the answer carries a
  warning (a policy that calls it immutable is wrong, or the repository's setting
  changed).
- ``purge IMAGE[:TAG|@DIGEST] [--blobs]`` forgets the tag (IMAGE alone: every cached
  tag of IMAGE; @DIGEST: the tags naming it). With ``blobs``, the manifests only
  those tags reached and their blobs go too, by eviction's rules: never a blob being
  read or filled, never one a remaining tag, a pin or another manifest needs
  (``proxy.cache.unreferenced``).

IMAGE is named as a client names it (mirrored registries' names included) and
resolved the same way. Without a tag, ``refresh`` also takes every cached tag.
"""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.cache.unreferenced import cached_manifests, reaching, unreferenced
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository, parse_tag
from proxy.services.container import Services
from proxy.services.mirrors import resolve_name


def split(text: str) -> tuple[str, str | None, Digest | None]:
    """``NAME[:TAG|@DIGEST]`` -> (name, tag or None, digest or None).

    >>> split("docker.io/library/alpine:3.20")
    ('docker.io/library/alpine', '3.20', None)
    >>> split("localhost:5000/p/r/i")
    ('localhost:5000/p/r/i', None, None)
    """
    name, at, digest = text.strip().partition("@")
    if at:
        return name, None, Digest.parse(digest)
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[:colon], parse_tag(name[colon + 1 :]), None
    return name, None, None


async def _repository(services: Services, name: str) -> Repository:
    return await resolve_name(services.mirrors, services.locations, name, ns=None)


async def _wait_for(services: Services, key: str, tags: list[str]) -> None:
    """A running revalidation of a tag would write it again after the purge."""
    for tag in tags:
        while (task := services.manifests.tags.running(key, tag)) is not None:
            await asyncio.wait([task])


async def refresh(services: Services, text: str) -> dict[str, Any]:
    name, tag, digest = split(text)
    if digest is not None:
        raise RegistryError(ErrorCode.QUERY_INVALID, "a digest never changes: refresh a tag")
    repo = await _repository(services, name)
    key = str(repo)
    tags = [tag] if tag else await services.index.tags.names(key)
    if not tags:
        raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"no cached tags of {key}: name a tag")
    rows = []
    for one in tags:
        row: dict[str, Any] = {"tag": one}
        try:
            found = await services.manifests.tags.refresh(repo, one)
        except RegistryError as error:
            if tag:  # the one asked for: its error is the answer
                raise
            row["error"] = error.message
        else:
            moved = found.before is not None and found.before != found.after
            row |= {
                "before": None if found.before is None else str(found.before),
                "after": str(found.after),
                "changed": found.before != found.after,
                "immutable": found.immutable,
            }
            if moved and found.immutable:
                row["warning"] = "immutable tag moved upstream"
        rows.append(row)
    return {"repository": key, "tags": rows}


async def _tags_to_forget(
    services: Services, key: str, tag: str | None, digest: Digest | None
) -> list[tuple[str, Digest]]:
    names = [tag] if tag else await services.index.tags.names(key)
    found = []
    for name in names:
        row = await services.index.tags.get(key, name)
        if row is not None and (digest is None or row.digest == digest):
            found.append((name, row.digest))
    return found


async def purge(services: Services, text: str, *, blobs: bool) -> dict[str, Any]:
    name, tag, digest = split(text)
    key = str(await _repository(services, name))
    forgotten = await _tags_to_forget(services, key, tag, digest)
    await _wait_for(services, key, [t for t, _ in forgotten])
    forgotten = await _tags_to_forget(services, key, tag, digest)  # as they are now
    for one, _ in forgotten:
        await services.index.tags.delete(key, one)
        services.manifests.tags.forget(key, one)
    answer: dict[str, Any] = {
        "repository": key,
        "tags": sorted(t for t, _ in forgotten),
        "manifests": 0,
        "blobs": 0,
        "freed": 0,
    }
    roots = {d for _, d in forgotten} | ({digest} if digest else set())
    if blobs and roots:
        answer |= await _remove_unreferenced(services, roots)
    return answer


async def _remove_unreferenced(services: Services, roots: set[Digest]) -> dict[str, int]:
    """What only ``roots`` reached: blob files (by eviction's rules), then manifest rows.
    A pull racing the purge may re-reference one; it is then fetched again, once."""
    index, needless = services.index, set[Digest]()

    async def pick() -> set[Digest]:  # asked under eviction's lock, just before removing
        needless.update(await unreferenced(index, roots))
        return needless

    removed, freed = await services.cache.remove(pick)
    # A blob being read stays, and so do the manifests above it (a large manifest is a
    # blob file too), so that purging by digest later finds it.
    kept = {d for d in needless if services.cache.size(d) is not None}
    above = await reaching(index, kept, needless)
    manifests = [m for m in await cached_manifests(index, needless) if m not in above]
    await index.manifests.remove(manifests)
    return {"manifests": len(manifests), "blobs": len(removed), "freed": freed}
