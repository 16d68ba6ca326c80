"""``artifactregistry.googleapis.com``: repository metadata (location, format, policies)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proxy.gar.jsonapi import JsonGetter

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

    async def find_location(self, project: str, repo: str, first: str) -> str | None:
        """Which location holds ``project/repo``; asks ``first`` before the others."""
        if await self.repository(project, first, repo) is not None:
            return first
        others = [loc for loc in await self.locations(project) if loc != first]
        others.sort(key=lambda loc: ("-" in loc, loc))  # multi-regions first
        gate = asyncio.Semaphore(8)

        async def probe(location: str) -> str | None:
            async with gate:
                found = await self.repository(project, location, repo)
                return location if found is not None else None

        for location in await asyncio.gather(*map(probe, others)):
            if location is not None:
                return location
        return None
