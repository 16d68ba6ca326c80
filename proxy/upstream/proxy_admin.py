"""A running gar-proxy's admin paths, asked by the CLI (``gar-proxy refresh|purge`` when
a proxy holds the cache directory): a POST with an optional bearer token, its JSON
answer, and one exception for "could not ask"."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

# Refreshing every tag of an image, or purging many blobs, may take a while.
TIMEOUT = httpx.Timeout(300.0, connect=10.0)


class AdminUnreachable(Exception):
    """The proxy did not answer (refused, timed out, not HTTP)."""


@dataclass(frozen=True)
class AdminAnswer:
    status: int
    data: dict[str, Any]

    @property
    def message(self) -> str:
        """The registry error's message, for an answer that is not 200."""
        errors = self.data.get("errors") or [{}]
        return str(errors[0].get("message") or f"HTTP {self.status}")


def post(base: str, path: str, *, token: str | None = None, query: str = "") -> AdminAnswer:
    """``POST BASE/_gar-proxy/PATH?QUERY``; ``path`` is quoted as a URL path."""
    url = f"{base.rstrip('/')}/_gar-proxy/{urllib.parse.quote(path, safe='/:@')}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=TIMEOUT) as http:
            answer = http.post(f"{url}?{query}" if query else url, headers=headers)
    except httpx.HTTPError as error:
        raise AdminUnreachable(str(error) or type(error).__name__) from None
    try:
        data = answer.json()
    except ValueError:
        data = {}
    return AdminAnswer(answer.status_code, data if isinstance(data, dict) else {})
