"""A ring of replicas behind Debian's nginx (and HAProxy), with deploy/ring/nginx.conf
(haproxy.cfg) itself, its server lines replaced by three replicas on loopback, each
with its own cache: cold
pulls fetch each blob from GAR once across the ring, a dead replica's keys move to the
next one (and only its keys are fetched again), and a push through nginx lands."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import pytest

from proxy.oci import mediatypes as mt
from testkit.fakes.gar import FakeGAR, Fault
from testkit.images import Image, build_image, make_layer, push_image
from testkit.proxyharness import RunningProxy, proxy_settings, run_proxy
from testkit.realclients import free_port
from testkit.ring import haproxy_config, nginx_config
from tests.conftest import FakeGarFactory, require_binaries

pytestmark = pytest.mark.realclient
ACCEPT = {"Accept": ", ".join(mt.DEFAULT_ACCEPT)}
REPO = "proj/repo/app"
PULLERS = 12


def _commands(balancer: str, replicas: list[str], root: Path, port: int) -> list[str]:
    """Write the balancer's config; its foreground command line (check: add -t / -c)."""
    require_binaries(balancer)
    root.mkdir(parents=True, exist_ok=True)
    if balancer == "haproxy":
        (root / "haproxy.cfg").write_text(haproxy_config(replicas, port))
        return ["haproxy", "-db", "-f", str(root / "haproxy.cfg")]
    (root / "nginx.conf").write_text(nginx_config(replicas, port, root))
    return ["nginx", "-p", str(root), "-c", str(root / "nginx.conf"), "-e", "stderr"]


@contextlib.contextmanager
def run_balancer(balancer: str, replicas: list[str], root: Path) -> Iterator[str]:
    port = free_port()
    command = _commands(balancer, replicas, root, port)
    check = "-c" if balancer == "haproxy" else "-t"
    checked = subprocess.run([*command, check], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert process.poll() is None and time.monotonic() < deadline, f"no {balancer}"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()


def pull(base: str, image: Image) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        got = http.get(f"/v2/{REPO}/manifests/1", headers=ACCEPT)
        assert got.status_code == 200, got.text
        assert got.headers["docker-content-digest"] == image.digest
        for blob in image.blobs:
            body = http.get(f"/v2/{REPO}/blobs/{blob.digest}")
            assert body.status_code == 200 and body.content == blob.data, body.text[:200]


def holds(replica: RunningProxy, digest: str) -> bool:
    """Whether a replica's own cache directory has the blob (named by its hex)."""
    hexa = digest.removeprefix("sha256:")
    return any(hexa in p.name for p in replica.settings.cache.dir.rglob("*"))


@pytest.fixture
def fake(fake_gar: FakeGarFactory) -> FakeGAR:
    fake = fake_gar(auth="none")
    fake.add_repository("us", "proj", "repo")  # GAR creates none on push
    return fake


@pytest.fixture(params=["nginx", "haproxy"])
def balancer(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@contextlib.contextmanager
def ring_of_three(
    fake: FakeGAR, balancer: str, tmp_path: Path, **keys: str
) -> Iterator[tuple[list[RunningProxy], str]]:
    """Three replicas, each on its own disk, behind ``balancer``: them and its URL."""
    with contextlib.ExitStack() as stack:
        replicas = [
            stack.enter_context(
                run_proxy(proxy_settings(tmp_path / f"r{n}", fake.upstream, **keys))
            )
            for n in range(3)
        ]
        urls = [r.url for r in replicas]
        yield replicas, stack.enter_context(run_balancer(balancer, urls, tmp_path / "lb"))


def test_a_ring_fetches_once_and_survives_a_dead_replica(
    fake: FakeGAR, balancer: str, tmp_path: Path
) -> None:
    image = build_image([make_layer(seed=n, size=64 * 1024) for n in range(5)])
    fake.put_image("us", REPO, "1", image)
    with ring_of_three(fake, balancer, tmp_path) as (replicas, ring):
        with ThreadPoolExecutor(PULLERS) as pool:
            list(pool.map(lambda _: pull(ring, image), range(PULLERS)))
        for blob in image.blobs:  # once across the ring, and on one replica's disk
            assert fake.count("GET", "blob", path=blob.digest) == 1
            assert sum(holds(r, blob.digest) for r in replicas) == 1
        spread = {n for n, r in enumerate(replicas) for b in image.blobs if holds(r, b.digest)}
        assert len(spread) > 1  # keyed by digest, not all on the repository's replica

        dead = max(replicas, key=lambda r: sum(holds(r, b.digest) for b in image.blobs))
        moved = {b.digest for b in image.blobs if holds(dead, b.digest)}
        assert moved
        with ThreadPoolExecutor(PULLERS) as pool:  # a replica dies while pulls run
            running = [pool.submit(pull, ring, image) for _ in range(2 * PULLERS)]
            next(as_completed(running)).result()
            dead.server.stop()  # its keys go to the next replica on the ring
            for future in running:
                future.result()  # none lost
        pull(ring, image)  # at least one pull after the stop, whatever the timing
        for blob in image.blobs:
            # nginx: a moved key goes to one next replica. HAProxy: until its health
            # check marks the replica down, a retry's redispatch may pick the other
            # neighbour on the ring, so a moved key may be fetched by two replicas.
            moves = {2} if balancer == "nginx" else {2, 3}
            expected = moves if blob.digest in moved else {1}
            assert fake.count("GET", "blob", path=blob.digest) in expected, blob.digest


def test_a_push_through_the_ring_lands_upstream(
    fake: FakeGAR, balancer: str, tmp_path: Path
) -> None:
    image = build_image([make_layer(seed=n + 10, size=32 * 1024) for n in range(3)])
    with ring_of_three(fake, balancer, tmp_path) as (_, ring):
        assert push_image(ring, "proj/repo/pushed", "v1", image) == image.digest
    got = httpx.get(f"{fake.url}/us/v2/proj/repo/pushed/manifests/v1", headers=ACCEPT)
    assert got.status_code == 200 and got.headers["docker-content-digest"] == image.digest
    for blob in image.blobs:
        blob_url = f"{fake.url}/us/v2/proj/repo/pushed/blobs/{blob.digest}"
        # GAR sends a blob GET on to a signed download (docs/GAR.md D1): follow it.
        assert httpx.get(blob_url, follow_redirects=True).content == blob.data


def test_a_gar_outage_is_not_multiplied_by_the_ring(
    fake: FakeGAR, balancer: str, tmp_path: Path
) -> None:
    """A replica's own 503 (GAR down) goes back to the client; the balancer does not ask
    the other replicas the same (each would ask GAR again: three times the traffic of
    an outage). Before, nginx's proxy_next_upstream had http_502 http_503 and HAProxy's
    retry-on 502 503: the fake counted three manifest GETs."""
    fake.put_image("us", REPO, "1", build_image([make_layer(seed=40)]))
    fake.add_fault(Fault(kind="manifest", status=503))
    with ring_of_three(fake, balancer, tmp_path, transport__retries="0") as (_, ring):
        answer = httpx.get(f"{ring}/v2/{REPO}/manifests/1", headers=ACCEPT, timeout=30)
    assert answer.status_code == 503
    assert fake.count("GET", "manifest") + fake.count("HEAD", "manifest") == 1
