"""``artifactregistry.googleapis.com``: repository metadata (location, format, policies)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from proxy.config import Settings
from proxy.upstream.auth import AccessTokens
from proxy.upstream.errors import from_response, from_transport

log = logging.getLogger("gar_proxy.gar")


class RepositoryApi:
    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, tokens: AccessTokens | None
    ) -> None:
        self.base = settings.metadata_api_url.rstrip("/")
        self._http = http
        self._tokens = tokens

    async def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        headers = {}
        if self._tokens is not None:
            headers["Authorization"] = "Bearer " + await self._tokens.token()
        url = f"{self.base}/v1/{path}"
        try:
            return await self._http.get(url, params=params, headers=headers)
        except httpx.HTTPError as error:
            raise from_transport(error, url) from None

    async def repository(self, project: str, location: str, repo: str) -> dict[str, Any] | None:
        response = await self._get(f"projects/{project}/locations/{location}/repositories/{repo}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise from_response(response, response.content)
        body: dict[str, Any] = response.json()
        return body

    async def locations(self, project: str) -> list[str]:
        found: list[str] = []
        token = ""
        while True:
            params = {"pageToken": token} if token else None
            response = await self._get(f"projects/{project}/locations", params)
            if response.status_code != 200:
                raise from_response(response, response.content)
            body = response.json()
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
