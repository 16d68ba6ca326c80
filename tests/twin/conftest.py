"""The proxy against the GAR twin (``testkit/fakes/gar_twin*.py``): a second reading of
the public evidence, every open behaviour a knob.

``twin(**knobs)`` is a served ``GarTwin`` holding the repository ``proj/repo``;
``through(twin, **settings)`` is the proxy in front of it, logging in as GAR's docs say
(Basic ``oauth2accesstoken`` with a Google access token, traded at the realm).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import pytest

from testkit.fakes.gar_twin import GarTwin
from testkit.fakes.gar_twin_wire import Knobs
from testkit.proxyharness import RunningProxy
from tests.conftest import ProxyFactory

TOKEN = "ya29.twin-access-token"
SIGNED = re.compile(r"artifacts-(?:downloads|uploads)/|X-Goog-Signature|upload_id=")


class TwinFactory(Protocol):
    def __call__(self, **knobs: Any) -> GarTwin: ...


class ThroughFactory(Protocol):
    def __call__(self, twin: GarTwin, **keys: Any) -> RunningProxy: ...


@pytest.fixture
def twin() -> Iterator[TwinFactory]:
    with contextlib.ExitStack() as stack:

        def start(**knobs: Any) -> GarTwin:
            served = GarTwin(Knobs(**knobs), access_tokens={TOKEN})
            served.add_repository("proj/repo")
            return stack.enter_context(served.serve())

        yield start


@pytest.fixture
def through(proxy: ProxyFactory) -> ThroughFactory:
    def start(twin: GarTwin, **keys: Any) -> RunningProxy:
        keys.setdefault("upstream__auth", "basic")
        keys.setdefault("upstream__username", "oauth2accesstoken")
        keys.setdefault("upstream__password", TOKEN)
        return proxy(twin.url, **keys)

    return start


def assert_never_named(texts: Iterable[str], twin: GarTwin) -> None:
    """No signed path, session URL or opaque string of the twin's in any text."""
    secrets = twin.opaques()
    for text in texts:
        found = SIGNED.search(text)
        assert found is None, text[max(found.start() - 200, 0) : found.end() + 200]
        leaked = [s for s in secrets if s[:40] in text]
        assert not leaked, f"an opaque string in: {text[:300]}"
