from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.servers import serve_in_thread
from tests.upstream.scripted import Handler, Script, ScriptServer


@pytest.fixture
def script_server() -> Iterator[ScriptServer]:
    servers = []

    def start(handler: Handler) -> tuple[Script, str]:
        script = Script(handler)
        context = serve_in_thread(script.app())
        url = context.__enter__()
        servers.append(context)
        return script, url

    yield start
    for context in servers:
        context.__exit__(None, None, None)
