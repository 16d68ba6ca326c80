"""Scenario 11: pushes, through gar-proxy and directly (only when asked for).

``skopeo copy`` of ``bench/big`` (5 layers, 256 MiB) and of ``bench/huge`` (one 1 GiB
layer) from a local OCI layout (made once per work directory from the upstream) to
the upstream, through gar-proxy and directly. The distribution registry's proxy mode
cannot push, so the reference is the direct push. Both go through a counting relay:
gar-proxy through the rig's, the direct push through a relay started for that push
(the bytes are counted the same way, and a new host each time keeps skopeo's blob
cache, which is shared by root on this machine, from offering a mount where an earlier
run pushed the same layers). Every push goes to a repository of its own
(``bench/push-<image>-<n>``), so the upstream holds none of its blobs there.

Reported: wall time of the copy, server CPU (gar-proxy's; the upstream registry's for
the direct push), and the bytes sent upstream per byte of the image's blobs.
"""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import measure as mm
from bench.client import BenchError
from bench.content import ImageRef
from bench.procstat import cpu_seconds
from bench.servers import Relay
from testkit.realclients import Skopeo

if TYPE_CHECKING:
    from bench.rig import Rig
    from bench.scenarios import Options

PUSH_TIMEOUT = 900.0
_serial = itertools.count()


def layout(rig: Rig, skopeo: Skopeo, image: ImageRef) -> str:
    """``oci:DIR:TAG`` holding ``image``, copied from the upstream once per workdir."""
    where = rig.workdir / "layouts" / image.repo.replace("/", "-")
    if not (where / "index.json").exists():
        shutil.rmtree(where, ignore_errors=True)
        where.parent.mkdir(parents=True, exist_ok=True)
        source = f"docker://{rig.upstream.host}/{image.repo}:{image.tag}"
        flags = ["--src-cert-dir", str(_certs(rig))] if rig.tls else []
        skopeo("copy", "--quiet", *flags, source, f"oci:{where}:{image.tag}", timeout=PUSH_TIMEOUT)
    return f"oci:{where}:{image.tag}"


def _certs(rig: Rig) -> Path:
    """A directory skopeo reads trusted CAs from (``*.crt``): the bench's test CA."""
    assert rig.tls is not None
    certs = rig.workdir / "tls" / "skopeo-certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rig.tls.ca, certs / "ca.crt")
    return certs


def _push(skopeo: Skopeo, source: str, host: str, repo: str, certs: Path | None) -> float:
    flags = ["--dest-cert-dir", str(certs)] if certs else []
    started = time.perf_counter()
    skopeo("copy", "--quiet", *flags, source, f"docker://{host}/{repo}:v1", timeout=PUSH_TIMEOUT)
    return time.perf_counter() - started


def pushes(rig: Rig, m: mm.Measurements, options: Options) -> None:
    skopeo = Skopeo(rig.workdir / "skopeo-push")
    images = [(rig.corpus.big, mm.PUSH_BIG, mm.PUSH_BIG_CPU, mm.PUSH_BIG_BYTES),
              (rig.corpus.huge, mm.PUSH_HUGE, mm.PUSH_HUGE_CPU, mm.PUSH_HUGE_BYTES)]  # fmt: skip
    for image, wall, cpu, sent in images:
        source = layout(rig, skopeo, image)
        for run in range(options.runs):
            for target in (rig.gar, rig.direct) if run % 2 == 0 else (rig.direct, rig.gar):
                pushed = push_once(rig, skopeo, source, image, through_gar=target is rig.gar)
                m.add(wall, target.name, pushed[0])
                m.add(cpu, target.name, pushed[1])
                m.add(sent, target.name, pushed[2] / image.blob_bytes)


def push_once(
    rig: Rig, skopeo: Skopeo, source: str, image: ImageRef, *, through_gar: bool
) -> tuple[float, float, int]:
    """One push to a new repository: (seconds, server CPU, bytes sent upstream)."""
    repo = f"bench/push-{image.repo.rsplit('/', 1)[-1]}-{next(_serial)}-{time.time_ns()}"
    if through_gar:
        rig.gar.fresh()  # a new port: skopeo's blob cache knows nothing there
        relay, host, certs, pid = rig.relay, rig.gar.url.split("://", 1)[1], None, rig.gar.pid
    else:
        scheme = "https" if rig.tls else "http"
        relay = Relay(rig.upstream.host, rig.workdir / "push-relay.log", scheme).start()
        host, pid = relay.url.split("://", 1)[1], rig.direct.pid
        certs = _certs(rig) if rig.tls else None
    try:
        relay.reset()
        before = cpu_seconds(pid)
        seconds = _push(skopeo, source, host, repo, certs)
        spent = cpu_seconds(pid) - before
        sent = relay.counts()[0]
    finally:
        if relay is not rig.relay:
            relay.stop()
    if sent < image.blob_bytes:  # a blob mounted or skipped: not a push of the image
        raise BenchError(f"{sent} bytes sent upstream for {repo}, under {image.blob_bytes}")
    return seconds, spent, sent
