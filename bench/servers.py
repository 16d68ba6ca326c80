"""The processes under test, each on 127.0.0.1, each stopped by its own PID.

A ``Target`` is something the client pulls from: gar-proxy, the distribution registry
in proxy mode, or the upstream itself. ``fresh()`` restarts a proxy on empty storage
(cold runs); ``pid`` is what memory and CPU are read from::

    with Relay(upstream.host) as relay:
        gar = GarProxy(workdir / "gar", relay.url).start()
        relay.reset(); ...; relay.counts()      # bytes to/from upstream
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from testkit.proxyprocess import ProxyProcess
from testkit.realclients import DistributionRegistry

START_TIMEOUT = 30.0
_RELAY_READY = re.compile(rb"relay listening on (\S+) control 127\.0\.0\.1:(\d+)")
ROOT = Path(__file__).resolve().parent.parent


class Target(Protocol):
    name: str

    @property
    def url(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def fresh(self) -> None: ...

    def stop(self) -> None: ...

    def stored(self, digest: str) -> bool:
        """The blob is in this target's own storage: a fill has finished."""
        ...


class Relay:
    """``python -m bench.relay`` in front of the upstream; counts bytes both ways.

    A TCP relay: for an HTTPS upstream (``scheme="https"``) it carries and counts the
    TLS records, and the certificate for 127.0.0.1 stays valid through it."""

    def __init__(self, target_host: str, log: Path, scheme: str = "http") -> None:
        self.target_host, self.log, self.scheme = target_host, log, scheme
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._control = 0

    def start(self) -> Relay:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.relay", "--target", self.target_host],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = _RELAY_READY.search(self.log.read_bytes()[offset:])
            if match:
                self.url, self._control = f"{self.scheme}://{match[1].decode()}", int(match[2])
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited: {self.log.read_text()}")
            time.sleep(0.02)
        raise TimeoutError("relay did not start")

    def _ask(self, command: str) -> tuple[int, int, int]:
        with socket.create_connection(("127.0.0.1", self._control), timeout=5) as sock:
            sock.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                piece = sock.recv(256)
                if not piece:
                    break
                data += piece
        up, down, connections = (int(x) for x in data.split())
        return up, down, connections

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def counts(self) -> tuple[int, int, int]:
        """(bytes sent to upstream, bytes received from it, connections) since reset."""
        return self._ask("get")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GarProxy:
    """gar-proxy as a subprocess, auth none, its own cache directory."""

    name = "gar-proxy"

    def __init__(
        self, workdir: Path, upstream_url: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.process = ProxyProcess(workdir / "cache", upstream_url, env=env)

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process.proc is not None else None

    def start(self) -> GarProxy:
        self.process.start()
        return self

    def fresh(self) -> None:
        self.stop()
        shutil.rmtree(self.process.cache_dir, ignore_errors=True)
        self.start()

    def stop(self) -> None:
        self.process.stop()

    def stored(self, digest: str) -> bool:
        algorithm, _, hexdigest = digest.partition(":")
        return (self.process.cache_dir / "blobs" / algorithm / hexdigest[:2] / hexdigest).exists()


class DistributionProxy:
    """The CNCF distribution registry with ``proxy: remoteurl:`` (the reference)."""

    name = "distribution"

    def __init__(
        self, workdir: Path, upstream_url: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.registry = DistributionRegistry(workdir, remote_url=upstream_url, env=env)

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def pid(self) -> int | None:
        daemon = self.registry._daemon  # the harness keeps its process private
        return daemon.proc.pid if daemon is not None else None

    def start(self) -> DistributionProxy:
        self.registry.start()
        return self

    def fresh(self) -> None:
        self.stop()
        shutil.rmtree(self.registry.storage, ignore_errors=True)
        self.start()

    def stop(self) -> None:
        self.registry.stop()

    def stored(self, digest: str) -> bool:
        return _distribution_blob(self.registry.storage, digest).exists()


class Direct:
    """The upstream registry itself, pulled from without any proxy (never restarted)."""

    name = "upstream"

    def __init__(self, registry: DistributionRegistry) -> None:
        self.registry = registry

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def pid(self) -> int | None:
        daemon = self.registry._daemon
        return daemon.proc.pid if daemon is not None else None

    def fresh(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def stored(self, digest: str) -> bool:
        return True


def _distribution_blob(storage: Path, digest: str) -> Path:
    """Where the distribution registry's filesystem driver keeps a blob's bytes."""
    algorithm, _, hexdigest = digest.partition(":")
    blobs = storage / "docker" / "registry" / "v2" / "blobs"
    return blobs / algorithm / hexdigest[:2] / hexdigest / "data"
