"""The TLS upstream variant (``python -m bench --upstream-tls``).

Real GAR is HTTPS only, and decryption plus the TLS read path change what a cold fill
costs, so the cold scenarios run a second time against an upstream reached over HTTPS,
in the same invocation, right after their plain run. Beside the plain rig it starts:

- a second ``docker-registry`` serving the plain upstream's storage (read only here)
  with ``http.tls``: a certificate for 127.0.0.1 from a test CA (``trustme``);
- a second relay in front of it: a TCP relay, so it carries and counts the TLS
  records (a few per cent more than the plain bytes) and the certificate stays valid;
- gar-proxy with ``upstream.ca_file`` = the CA; the distribution proxy with
  ``SSL_CERT_FILE`` = the CA (Go's crypto/x509 reads it); the direct puller trusts it.

Both proxies listen in plain HTTP, as before: only their upstream changes. The twins of
the scenarios' metrics (``measure.over_tls``) are reported as ``[TLS upstream]`` rows
under the ``[plain upstream]`` ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Iterator

from bench import measure as mm
from bench.rig import Rig
from bench.scenarios import SCENARIOS, Options
from bench.servers import Direct, DistributionProxy, GarProxy, Relay
from testkit.realclients import DistributionRegistry, TlsFiles

# The cold scenarios: the only ones whose bytes come from the upstream while timed.
COLD = (1, 3, 7, 10, 11)  # and the pushes, whose bytes go to the upstream
CONTEXT = (
    "- TLS upstream rows: the same upstream storage served by a second docker-registry "
    "with http.tls (test CA; Go's TLS 1.3), through its own counting relay; gar-proxy "
    "trusts the CA via upstream.ca_file, the distribution proxy via SSL_CERT_FILE"
)


@contextlib.contextmanager
def tls_rig(rig: Rig) -> Iterator[Rig]:
    """``rig`` with its upstream, relay, proxies and direct target replaced by HTTPS ones."""
    base = rig.workdir / "tls"
    for leftover in ("gar", "distribution"):
        shutil.rmtree(base / leftover, ignore_errors=True)
    files = TlsFiles.issue(base / "certs")
    storage = {"storage": {"filesystem": {"rootdirectory": str(rig.upstream.storage)}}}
    with contextlib.ExitStack() as stack:
        upstream = DistributionRegistry(base / "upstream", config=storage, tls=files)
        stack.enter_context(upstream)
        relay = stack.enter_context(Relay(upstream.host, base / "relay.log", scheme="https"))
        gar = GarProxy(base / "gar", relay.url, env={"GAR_PROXY_UPSTREAM_CA_FILE": str(files.ca)})
        stack.callback(gar.stop)
        distribution = DistributionProxy(
            base / "distribution", relay.url, env={"SSL_CERT_FILE": str(files.ca)}
        )
        stack.callback(distribution.stop)
        gar.start()
        distribution.start()
        yield dataclasses.replace(
            rig, upstream=upstream, relay=relay, gar=gar, distribution=distribution,
            direct=Direct(upstream), tls=files,
        )  # fmt: skip


def run(rig: Rig, m: mm.Measurements, options: Options, number: int) -> None:
    """Scenario ``number`` on the TLS rig; its figures land in ``m`` as TLS twins."""
    twin = mm.Measurements()
    if options.py_spy is not None:  # profiles beside the plain ones' of the same name
        options = dataclasses.replace(options, py_spy=options.py_spy / "tls")
    SCENARIOS[number](rig, twin, options)
    for key, per_target in twin.samples.items():
        m.samples[mm.tls_key(key)] = per_target
    m.notes += [f"TLS upstream: {note}" for note in twin.notes]
