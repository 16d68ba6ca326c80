"""The rig: upstream registry, counting relay, both proxies and the pushed images.

Everything binds 127.0.0.1 and lives under one work directory; ``close()`` stops
what ``Rig.up`` started, each by its own PID::

    with Rig.up(workdir, PROFILES["quick"]) as rig:
        rig.targets        # gar-proxy, distribution (both via the relay), upstream
        rig.relay.counts()
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.content import Corpus, Profile, load, populate, save
from bench.servers import Direct, DistributionProxy, GarProxy, Relay, Target
from testkit.realclients import DistributionRegistry, TlsFiles


@dataclass
class Rig:
    workdir: Path
    profile: Profile
    upstream: DistributionRegistry
    relay: Relay
    gar: GarProxy
    distribution: DistributionProxy
    direct: Direct
    corpus: Corpus
    setup_seconds: float
    tls: TlsFiles | None = None  # the upstream is HTTPS with this CA (bench/tls.py)

    @property
    def client_verify(self) -> ssl.SSLContext | bool:
        """What a puller trusts: the test CA when the upstream is HTTPS."""
        return self.tls.client_context() if self.tls else True

    @property
    def proxies(self) -> tuple[Target, Target]:
        return (self.gar, self.distribution)

    @property
    def targets(self) -> tuple[Target, Target, Target]:
        return (self.gar, self.distribution, self.direct)

    @classmethod
    @contextlib.contextmanager
    def up(cls, workdir: Path, profile: Profile) -> Iterator[Rig]:
        started = time.perf_counter()
        workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            upstream = stack.enter_context(DistributionRegistry(workdir / "upstream"))
            # A kept --workdir keeps the upstream's images: generating them takes a while.
            saved = workdir / "corpus.json"
            corpus = load(saved, profile)
            if corpus is None:
                corpus = populate(upstream.url, workdir / "scratch", profile)
                save(corpus, saved, profile)
            for leftover in ("gar", "distribution"):
                shutil.rmtree(workdir / leftover, ignore_errors=True)
            relay = stack.enter_context(Relay(upstream.host, workdir / "relay.log"))
            gar = GarProxy(workdir / "gar", relay.url)
            stack.callback(gar.stop)
            distribution = DistributionProxy(workdir / "distribution", relay.url)
            stack.callback(distribution.stop)
            gar.start()
            distribution.start()
            yield cls(
                workdir, profile, upstream, relay, gar, distribution, Direct(upstream), corpus,
                time.perf_counter() - started,
            )  # fmt: skip
