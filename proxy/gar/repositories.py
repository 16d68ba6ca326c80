"""``artifactregistry.googleapis.com``: repository metadata (location, format, policies)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from proxy.gar.jsonapi import JsonGetter
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import KNOWN_LOCATIONS

log = logging.getLogger("gar_proxy.gar")


class RepositoryApi:
    def __init__(self, base_url: str, api: JsonGetter) -> None:
        self.base = base_url.rstrip("/")
        self._api = api

    async def repository(self, project: str, location: str, repo: str) -> dict[str, Any] | None:
        return await self._api.get_json(
            f"{self.base}/v1/projects/{project}/locations/{location}/repositories/{repo}"
        )

    async def locations(self, project: str) -> list[str]:
        found: list[str] = []
        token = ""
        while True:
            params = {"pageToken": token} if token else None
            body = await self._api.get_json(f"{self.base}/v1/projects/{project}/locations", params)
            if body is None:
                return found
            found += [str(loc.get("locationId")) for loc in body.get("locations", [])]
            token = body.get("nextPageToken") or ""
            if not token:
                return found

    async def find_location(self, project: str, repo: str, first: str) -> Search:
        """Which location holds ``project/repo``; asks ``first`` before the others.

        GAR's IAM answers before it looks (docs/GAR.md R4): a principal with grants on
        some repositories only gets 403 in every location where it may not look, so a
        403 is one location's answer, not the search's. A repository found anywhere is
        the answer; when none is, the only location that refused is taken as the one
        holding it (elsewhere said 404: it exists there, this identity may not see
        it). Errors other than 403 fail the search only when nothing was found."""
        denied: dict[str, str] = {}
        failures: list[RegistryError] = []

        async def probe(location: str) -> str | None:
            try:
                found = await self.repository(project, location, repo)
            except RegistryError as error:
                if error.code is ErrorCode.DENIED:
                    denied[location] = error.message
                else:
                    failures.append(error)
                return None
            return location if found is not None else None

        if await probe(first) is not None:
            return Search(first)
        gate = asyncio.Semaphore(8)

        async def gated(location: str) -> str | None:
            async with gate:
                return await probe(location)

        others = [loc for loc in await self._listed(project) if loc != first]
        others.sort(key=lambda loc: ("-" in loc, loc))  # multi-regions first
        for location in await asyncio.gather(*map(gated, others)):
            if location is not None:
                return Search(location, tuple(sorted(denied)))
        if failures:
            raise failures[0]
        only = next(iter(denied)) if len(denied) == 1 else None
        said = next(iter(denied.values()), "")
        return Search(only, tuple(sorted(denied)), said, inferred=only is not None)

    async def _listed(self, project: str) -> list[str]:
        """The project's locations; every known one when the API will not list them."""
        try:
            return await self.locations(project)
        except RegistryError as error:
            if error.code is not ErrorCode.DENIED:
                raise
            log.info("cannot list the locations of %s (%s); asking each known one", project,
                     error.message)  # fmt: skip
            return sorted(KNOWN_LOCATIONS)


@dataclass(frozen=True, slots=True)
class Search:
    """Where a repository was found (``location``), and which locations refused
    to say (``denied``, with the first refusal's words in ``said``). ``inferred``: not
    found, but the one location that refused (every other said 404)."""

    location: str | None
    denied: tuple[str, ...] = ()
    said: str = ""
    inferred: bool = False
