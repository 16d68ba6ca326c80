"""Does the upstream answer ``/v2/`` as a registry? Asked at start and by ``/readyz``.

A registry answers ``/v2/`` with 200, or 401 and a ``WWW-Authenticate`` challenge,
usually with ``Docker-Distribution-API-Version``. A web server at a wrong URL answers
404 or an HTML page: that is named at start-up, rather than reported later, on the
first pull, as "manifest unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Probe:
    url: str
    status: int | None  # None: no answer at all
    registry: bool
    detail: str

    def describe(self) -> str:
        if self.registry:
            return f"upstream {self.url} answered as a registry (HTTP {self.status})"
        if self.status is None:
            return f"upstream {self.url} did not answer ({self.detail})"
        return (
            f"upstream {self.url} is not a registry (HTTP {self.status}, {self.detail}): "
            "check upstream.url"
        )


def _looks_like_registry(response: httpx.Response) -> bool:
    if response.headers.get("docker-distribution-api-version"):
        return True
    challenge = response.headers.get("www-authenticate", "").lower()
    if response.status_code == 401 and challenge.startswith(("bearer", "basic")):
        return True
    kind = response.headers.get("content-type", "")
    return response.status_code == 200 and kind.startswith("application/json")


async def probe(http: httpx.AsyncClient, base: str) -> Probe:
    """``GET {base}/v2/`` without credentials: one request, no retries."""
    url = f"{base.rstrip('/')}/v2/"
    try:
        response = await http.get(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError as error:
        return Probe(url, None, False, type(error).__name__)
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return Probe(url, response.status_code, _looks_like_registry(response), kind)
