from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import trustme

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


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A test CA: servers get its certificates, clients trust it."""
    return trustme.CA()


@pytest.fixture(params=["plain", "tls"])
def tls(request: pytest.FixtureRequest, ca: trustme.CA) -> ssl.SSLContext | None:
    """A loopback server's TLS context (a certificate for 127.0.0.1), or None: plain."""
    if request.param == "plain":
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context
