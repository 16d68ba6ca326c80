"""The seam between the GAR-intelligence modules and HTTP: a JSON getter, and paging.

The integrator binds ``JsonGetter`` to the pooled, authenticated client; tests pass a
small object with the same method. Google's list methods page with ``pageToken`` in the
request and ``nextPageToken`` in the answer; ``pages`` follows them to the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol


class JsonGetter(Protocol):
    async def get_json(
        self, url: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The decoded JSON body of a GET, or None when the answer was 404."""
        ...


class NotFound(Exception):
    """A list or resource the API answered 404 for; the message names it."""


async def pages(
    api: JsonGetter, url: str, params: Mapping[str, str], items: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """The ``items`` list of every page of a Google list method, in order."""
    token = ""
    while True:
        query = dict(params)
        if token:
            query["pageToken"] = token
        body = await api.get_json(url, query)
        if body is None:
            raise NotFound(url)
        yield list(body.get(items) or ())
        token = str(body.get("nextPageToken") or "")
        if not token:
            return
