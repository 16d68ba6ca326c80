"""Which GAR location serves ``PROJECT/REPO/...`` when the client did not say.

In order: a location the client named (host-qualified name, ``?ns=``); a configured
route for the longest matching prefix; the repository's real location from GAR's
metadata API (looked up once, remembered in the index across restarts); the
configured default location (``us`` unless set).

A two-part name (``REPO/IMAGE``) is not a GAR path; with ``gcp.project_id`` set it is
taken as ``PROJECT/REPO/IMAGE`` in that project. Three parts or more always start
with the project, since GAR images may have nested names.
"""

from __future__ import annotations

import logging

from proxy.cache.index import CacheIndex
from proxy.cache.singleflight import SingleFlight
from proxy.clock import SYSTEM, Clock
from proxy.config import RoutingSettings
from proxy.gar.repositories import RepositoryApi, Search
from proxy.oci.errors import RegistryError
from proxy.oci.names import Repository, is_location_name
from proxy.services.repository_checks import RepositoryChecks

log = logging.getLogger("gar_proxy.locations")
# After a failed lookup, use the default for this long before asking again.
NEGATIVE_TTL = 600.0
# A repository that took the default location (nothing remembered, no lookup allowed)
# keeps it this long before the index is asked again (another process may have
# looked it up): not an index query on every request.
DEFAULT_RECHECK = 60.0
# Names a client may invent: the memo of defaulted ones starts over past this many.
DEFAULTED_LIMIT = 4096


class LocationResolver:
    def __init__(
        self,
        settings: RoutingSettings,
        api: RepositoryApi | None,
        index: CacheIndex,
        *,
        gar: bool,
        offline: bool = False,
        default_project: str | None = None,
        clock: Clock = SYSTEM,
        checks: RepositoryChecks | None = None,
    ) -> None:
        self.settings = settings
        self.gar = gar  # the upstream is Artifact Registry: names have its shape
        self.checks = checks
        self.api = api
        self.index = index
        self.offline = offline
        self.default_project = default_project
        self.clock = clock
        self._known: dict[str, str] = {}
        self._failed: dict[str, float] = {}
        self._defaulted: dict[str, float] = {}  # key -> monotonic time to look again
        self._lookups: SingleFlight[str | None] = SingleFlight()
        self._routes = sorted(settings.routes, key=lambda r: len(r.prefix), reverse=True)

    async def resolve(self, repo: Repository, *, write: bool = False) -> Repository:
        """The repository with its location; raises when it must not reach the registry
        (``proxy.services.repository_checks``)."""
        resolved = await self._resolve(repo)
        if self.checks is not None:
            await self.checks.check(resolved, write=write)
        return resolved

    def named(self, repo: Repository) -> Repository:
        """The repository's path as GAR knows it, before its location is looked for:
        the default project added to a two-part name. No I/O, so access rules are
        judged on this before a lookup is made for anyone."""
        if not self.gar:
            return repo
        if self.default_project and len(repo.segments) == 2:
            project = self.default_project.replace(":", "/")  # example.com:p: GAR.md N5
            repo = Repository(f"{project}/{repo.path}", repo.location, repo.regional)
        repo.require_gar_shape()
        return repo

    async def _resolve(self, repo: Repository) -> Repository:
        if not self.gar:
            return repo
        repo = self.named(repo)
        if repo.location:
            return repo
        for route in self._routes:
            if repo.path == route.prefix or repo.path.startswith(route.prefix + "/"):
                return repo.with_location(route.location)
        return repo.with_location(await self._remembered(repo))

    async def _remembered(self, repo: Repository) -> str:
        key = f"{repo.project}/{repo.repository}"
        location = self._known.get(key)
        if location is not None:
            return location
        now = self.clock.monotonic()
        if self._defaulted.get(key, now) > now:
            return self.settings.location
        document = await self.index.documents.get(f"location:{key}")
        if document is not None and is_location_name(document[1].decode()):
            location = self._known[key] = document[1].decode()
            return location
        if not self._may_look_up(key):
            retry = self._failed.get(key, now) + NEGATIVE_TTL  # when a lookup may be tried
            if len(self._defaulted) >= DEFAULTED_LIMIT:
                self._defaulted.clear()  # forgotten names cost one index query again
            self._defaulted[key] = min(now + DEFAULT_RECHECK, max(retry, now))
            return self.settings.location
        found = await self._lookups.do(key, lambda: self._look_up(repo, key))
        return found or self.settings.location

    def _may_look_up(self, key: str) -> bool:
        if not self.settings.resolve_locations or self.offline or self.api is None:
            return False
        return self.clock.monotonic() - self._failed.get(key, -NEGATIVE_TTL) >= NEGATIVE_TTL

    async def _look_up(self, repo: Repository, key: str) -> str | None:
        assert self.api is not None
        try:
            search = await self.api.find_location(
                repo.project, repo.repository or "", self.settings.location
            )
        except RegistryError as error:
            log.warning(
                "could not look up the location of %s (%s); using %s",
                key,
                error.message,
                self.settings.location,
            )
            search = Search(None)
        location = search.location
        if search.denied and (location is None or search.inferred):
            self._report_denied(key, search)
        if location is None or not is_location_name(location):
            self._failed[key] = self.clock.monotonic()
            return None
        self._known[key] = location
        await self.index.documents.put(f"location:{key}", "text/plain", location.encode(), "{}")
        log.info("repository %s lives in %s", key, location)
        return location

    def _report_denied(self, key: str, search: Search) -> None:
        """GAR's IAM would not say where ``key`` is (docs/GAR.md R4): say so, in its words."""
        where = ", ".join(search.denied[:6]) + (" ..." if len(search.denied) > 6 else "")
        if search.inferred:
            log.warning(
                "the Artifact Registry API denied gar-proxy %s in %s and found it nowhere "
                "else; using %s: %s", key, where, search.location, search.said,
            )  # fmt: skip
            return
        log.warning(
            "the Artifact Registry API denied gar-proxy %s in %d locations (%s): %s; using "
            "%s. Name the location (LOCATION-docker.pkg.dev/%s/...), add an routing.routes "
            "entry, or grant gar-proxy's identity artifactregistry.repositories.get",
            key, len(search.denied), where, search.said, self.settings.location, key,
        )  # fmt: skip
