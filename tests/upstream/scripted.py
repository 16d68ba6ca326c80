"""A registry whose answers a test scripts, on loopback, and the upstream client's
settings for it (fast backoff, no credentials): ``script_server`` (conftest.py)
starts one per call and stops them after the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.clock import SYSTEM, Clock
from proxy.config import Settings, load_settings
from proxy.services import container
from proxy.upstream.auth import AccessTokens
from proxy.upstream.client import Upstream

Handler = Callable[[Request, int], Response]


class Script:
    """A registry whose answers a test scripts; it records what it was sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Request] = []
        self.auth: list[str | None] = []

    async def endpoint(self, request: Request) -> Response:
        self.seen.append(request)
        self.auth.append(request.headers.get("authorization"))
        return self.handler(request, len(self.seen))

    def app(self) -> Starlette:
        methods = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.endpoint, methods=methods)])


ScriptServer = Callable[[Handler], tuple[Script, str]]


def settings(tmp_path: Path, url: str, **keys: str) -> Settings:
    overrides = {
        "upstream.url": url,
        "upstream.auth": "none",
        "transport.backoff_base": "0.01",
        "transport.backoff_max": "0.05",
        **{k.replace("__", "."): v for k, v in keys.items()},
    }
    return load_settings(None, env={"HOME": str(tmp_path)}, overrides=overrides)


def make_upstream(
    settings: Settings, tokens: AccessTokens | None, clock: Clock = SYSTEM
) -> Upstream:
    return container.make_upstream(settings, tokens, clock)
