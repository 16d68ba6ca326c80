"""The proxy under test: real uvicorn on 127.0.0.1:0 in a thread, with its services reachable.

with run_proxy(proxy_settings(tmp_path, upstream_url, auth="none")) as proxy:
    httpx.get(proxy.url + "/v2/")
    proxy.services.metrics ...          # the running app's own objects
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette

from proxy.app import create_app
from proxy.auth.tls import ReloadingCertificate
from proxy.clock import SYSTEM, Clock
from proxy.commands.serve import bind_mirrors, uvicorn_options
from proxy.config import Settings, load_settings
from proxy.http.guarded import guarded_protocol
from proxy.http.limits import ConnectionLimits, Connections
from proxy.services.container import Services
from testkit.servers import ThreadedServer

T = TypeVar("T")


def proxy_settings(cache: Path, upstream_url: str, *, auth: str = "none", **keys: Any) -> Settings:
    """Settings for tests: no real credentials, fast retries, the given upstream."""
    env = {"HOME": str(cache / "home")}
    overrides = {
        "cache.dir": str(cache / "cache"),
        "upstream.url": upstream_url,
        "upstream.auth": auth,
        "transport.backoff_base": "0.01",
        "transport.backoff_max": "0.1",
        "routing.resolve_locations": "false",
        "routing.check_repositories": "false",
        # The background upstream check sleeps on the proxy's clock, and a ManualClock's
        # sleep moves time at once: the loop would race a test's TTLs forward. Tests of
        # the check turn it on with a SteppedClock (testkit.clocks).
        "upstream.check_interval": "0",
        **{key.replace("__", "."): value for key, value in keys.items()},
    }
    return load_settings(None, env=env, overrides=overrides)


@dataclass
class RunningProxy:
    server: ThreadedServer
    settings: Settings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self) -> Starlette:
        """The proxy's app, under whatever uvicorn wrapped it in (its proxy-headers
        middleware, with ``server.trusted_proxies``)."""
        app = self.server.config.loaded_app
        while not isinstance(app, Starlette):
            app = app.app
        return app

    @property
    def services(self) -> Services:
        found: Services = self.app.state.services
        return found

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the proxy's own event loop (its objects live there)."""
        assert self.server.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.server.loop).result(timeout)

    def mirror_url(self, host: str) -> str:
        """``http://127.0.0.1:PORT`` of the mirror for ``host`` that has a listen address."""
        mirror = next(m for m in self.settings.routing.mirrors if m.host == host)
        assert mirror.listen is not None, f"mirror {host} has no listen address"
        return "http://{}:{}".format(*mirror.listen)

    def upstream_fetches(self, kind: str) -> float:
        value = self.services.metrics.registry.get_sample_value(
            "garproxy_upstream_fetches_total", {"kind": kind}
        )
        return value or 0.0


@contextlib.contextmanager
def run_proxy(
    settings: Settings, *, zero_copy: bool = True, clock: Clock = SYSTEM
) -> Iterator[RunningProxy]:
    """``zero_copy=False``: plain uvicorn, as another ASGI server would serve the app
    (without the connection bounds of ``proxy.http.guarded``);
        ``clock``: a ``ManualClock`` for tests that step TTLs. With ``tls.cert_file`` set it
        listens with TLS, as ``serve`` does."""
    tls = ReloadingCertificate(settings.tls) if settings.tls.cert_file else None
    context = tls.listener if tls else None
    # As serve runs it: the guarded protocol does the TLS handshake itself.
    http: Any = "httptools"
    if zero_copy:
        http = guarded_protocol(Connections(ConnectionLimits.of(settings.server)), context)
    settings, mirror_sockets = bind_mirrors(settings)  # each mirror's own listen address
    try:
        server = ThreadedServer(
            create_app(settings, clock),
            http=http,
            ssl_context=None if zero_copy else context,
            scheme="https" if context else None,
            extra_sockets=mirror_sockets,
            **uvicorn_options(settings),
        )
    except BaseException:
        for sock in mirror_sockets:
            sock.close()
        raise
    server.start()
    try:
        yield RunningProxy(server, settings)
    finally:
        server.stop()


def pull_twice(proxy_url: str, repo: str, tag: str, blobs: Iterable[tuple[str, bytes]]) -> None:
    """A cold then a warm pull of ``repo:tag`` (its manifest, then each blob, checked)."""
    import httpx

    from proxy.oci import mediatypes as mt

    accept = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
    wanted = list(blobs)
    with httpx.Client(base_url=proxy_url, timeout=30) as http:
        for _ in range(2):
            assert http.get(f"/v2/{repo}/manifests/{tag}", headers=accept).status_code == 200
            for digest, data in wanted:
                assert http.get(f"/v2/{repo}/blobs/{digest}").content == data
