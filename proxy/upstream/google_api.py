"""Authenticated JSON reads of Google's REST APIs (Artifact Registry, Container Analysis).

The ``proxy.gar`` clients call ``get_json``; answers other than 200 and 404 become
``RegistryError`` here, as registry answers do in ``proxy.upstream.registry``, with
Google's reason in the message (``SERVICE_DISABLED: ...``, docs/GAR.md R1)::

    body = await api.get_json(f"{base}/v1/projects/p/locations/us/repositories/r")
    if body is None: ...     # 404: no such resource

``full_scope``: every call carries a ``cloud-platform`` token even when the proxy runs
with ``gcp.read_only``. Container Analysis lists no other scope (docs/GAR.md R6): a
read-only token is refused with ACCESS_TOKEN_SCOPE_INSUFFICIENT, so its client is made
with ``full_scope=True``; Artifact Registry's reads take the read-only scope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from proxy.oci.errors import ErrorCode, RegistryError
from proxy.upstream import errors
from proxy.upstream.auth import AccessTokens

# REST answers are small; a page of occurrences is well under this.
JSON_LIMIT = 16 * 1024 * 1024


class GoogleApi:
    def __init__(
        self, http: httpx.AsyncClient, tokens: AccessTokens | None, *, full_scope: bool = False
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._full_scope = full_scope

    async def get_json(
        self, url: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The JSON object at ``url``; None when the API answers 404."""
        headers = {}
        if self._tokens is not None:
            headers["Authorization"] = "Bearer " + await self._tokens.token(wide=self._full_scope)
        try:
            async with self._http.stream("GET", url, params=params, headers=headers) as response:
                body = await _read(response, JSON_LIMIT)
        except httpx.HTTPError as error:
            raise errors.from_transport(error, url) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise errors.from_status(response.status_code, response.headers, body)
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise RegistryError(
                ErrorCode.UPSTREAM_BAD_GATEWAY, f"{url.split('?')[0]} answered without JSON"
            )
        return document


async def _read(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise RegistryError(ErrorCode.UPSTREAM_BAD_GATEWAY, f"API answer over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
