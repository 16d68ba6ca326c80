"""Checks on the Artifact Registry repository a request names, before the registry is asked.

- **Location**: one Artifact Registry offers. The project's list comes from
  ``projects.locations.list``, remembered in the cache index and refreshed daily (and
  at most every ten minutes when a name is not on it, so a region Google adds works
  without a release); the built-in list (``proxy.oci.names``) is only the fallback
  when the API cannot tell. An unknown location is ``NAME_INVALID``, upstream unasked.
- **Format and mode** (``projects.locations.repositories.get``, kept an hour): a
  repository that is not ``DOCKER`` is refused naming it and its format; a push to a
  remote or virtual repository is refused naming its mode (GAR only reads those).
- **Immutable tags** (the same answer's ``dockerConfig.immutableTags``): GAR lets no
  tag of such a repository move or go, so its tags are never revalidated
  (``immutable_tags``, read by ``proxy.services.revalidation``; no call of its own).

The API's failures never block a pull: the check is skipped (and not asked again for
a minute), and the registry answers as it would have.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from proxy.cache.index import CacheIndex
from proxy.cache.singleflight import SingleFlight
from proxy.clock import Clock
from proxy.gar.repositories import RepositoryApi
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import KNOWN_LOCATIONS, Repository

log = logging.getLogger("gar_proxy.repositories")
LOCATIONS_TTL = 24 * 3600.0
LOCATIONS_RECHECK = 600.0  # an unlisted name refreshes a list at least this old
REPOSITORY_TTL = 3600.0
FAILED_TTL = 60.0  # after an API failure or a 404, skip the check this long
READ_ONLY_MODES = {"REMOTE_REPOSITORY": "a cache of another registry", "VIRTUAL_REPOSITORY":
                   "a view over other repositories"}  # fmt: skip


class RepositoryChecks:
    def __init__(self, api: RepositoryApi | None, index: CacheIndex, clock: Clock) -> None:
        self.api = api  # None: no API calls (offline, not GAR, or checks turned off)
        self.index = index
        self.clock = clock
        self._locations: dict[str, _Listed] = {}
        self._repositories: dict[tuple[str, str, str], tuple[float, str, str]] = {}
        self._immutable: set[tuple[str, str, str]] = set()  # dockerConfig.immutableTags
        self._flights: SingleFlight[None] = SingleFlight()

    async def check(self, repo: Repository, *, write: bool = False) -> None:
        """Raises when ``repo`` (location resolved) must not reach the registry."""
        if repo.location is None or repo.repository is None:
            return
        await self.require_location(repo.project, repo.location)
        if self.api is None:
            return
        key = (repo.project, repo.location, repo.repository)
        cached = self._repositories.get(key)
        if cached is None or cached[0] <= self.clock.monotonic():
            await self._flights.do(key, lambda: self._read_repository(key))
            cached = self._repositories[key]
        _, kind, mode = cached
        name = f"projects/{key[0]}/locations/{key[1]}/repositories/{key[2]}"
        if kind and kind != "DOCKER":
            raise RegistryError(
                ErrorCode.REPOSITORY_FORMAT,
                f"{name} is a {kind} repository; gar-proxy serves DOCKER repositories only",
                detail={"repository": name, "format": kind},
            )
        if write and mode in READ_ONLY_MODES:
            raise RegistryError(
                ErrorCode.DENIED,
                f"{name} is a {mode} ({READ_ONLY_MODES[mode]}) and cannot be pushed to;"
                " push to a standard repository",
                detail={"repository": name, "mode": mode},
            )

    async def _read_repository(self, key: tuple[str, str, str]) -> None:
        assert self.api is not None
        try:
            body = await self.api.repository(*key)
        except RegistryError as error:
            log.warning("cannot read repository %s: %s; not checked", "/".join(key), error.message)
            body = None
        if body is None:  # what was known about its tags stays known
            self._repositories[key] = (self.clock.monotonic() + FAILED_TTL, "", "")
            return
        kind, mode = str(body.get("format") or ""), str(body.get("mode") or "")
        self._repositories[key] = (self.clock.monotonic() + REPOSITORY_TTL, kind, mode)
        docker = body.get("dockerConfig")
        if isinstance(docker, dict) and docker.get("immutableTags") is True:
            self._immutable.add(key)
        else:
            self._immutable.discard(key)

    def immutable_tags(self, repo: Repository) -> bool:
        """GAR said this repository's tags cannot move (as of its last answer)."""
        if repo.location is None or repo.repository is None:
            return False
        return (repo.project, repo.location, repo.repository) in self._immutable

    async def require_location(self, project: str, location: str) -> None:
        known = await self.locations(project)
        if location not in known:
            known = await self.locations(project, unlisted=location)
        if location not in known:
            raise RegistryError(
                ErrorCode.NAME_INVALID,
                f"unknown Artifact Registry location {location[:64]!r}",
                detail={"known": sorted(known)},
            )

    async def locations(self, project: str, *, unlisted: str | None = None) -> frozenset[str]:
        """The project's locations: remembered, refreshed, or the built-in list."""
        if self.api is None:
            return KNOWN_LOCATIONS
        listed = self._locations.get(project) or await self._remembered(project)
        age = self.clock.time() - listed.fetched
        if age >= (LOCATIONS_RECHECK if unlisted else LOCATIONS_TTL) and (
            self.clock.monotonic() >= listed.retry_at
        ):
            await self._flights.do(("locations", project), lambda: self._list(project, listed))
            listed = self._locations[project]
        return listed.known

    async def _remembered(self, project: str) -> _Listed:
        document = await self.index.documents.get(f"locations:{project}")
        if document is None:
            return _Listed(KNOWN_LOCATIONS, 0.0, 0.0)
        listed = _Listed(frozenset(json.loads(document[1])), document[3], 0.0)
        self._locations[project] = listed
        return listed

    async def _list(self, project: str, before: _Listed) -> None:
        assert self.api is not None
        retry_at = self.clock.monotonic() + LOCATIONS_RECHECK
        try:
            found = frozenset(await self.api.locations(project))
        except RegistryError as error:
            log.warning("cannot list the locations of %s: %s", project, error.message)
            found = frozenset()
        if not found:  # keep what we had, the built-in list at worst
            self._locations[project] = _Listed(before.known, before.fetched, retry_at)
            return
        self._locations[project] = _Listed(found, self.clock.time(), retry_at)
        body = json.dumps(sorted(found)).encode()
        await self.index.documents.put(f"locations:{project}", "application/json", body, "{}")


@dataclass(frozen=True, slots=True)
class _Listed:
    known: frozenset[str]
    fetched: float  # wall time of the API's answer; 0: never asked
    retry_at: float  # monotonic time before which the API is not asked again
