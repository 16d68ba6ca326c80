"""A private containerd (the Debian package's binary) with its CRI plugin, under a short
/tmp dir: its own root, state and socket, the ``native`` snapshotter (no overlay mounts
needed), and whatever registry settings a test gives, as TOML text appended to the
base configuration (a recipe from deploy/containerd/ with its paths filled in)::

    with Containerd(registry_toml) as daemon:
        proxy.doctor.cri.pull(daemon.socket, "us-docker.pkg.dev/proj/repo/app:1")

The kubelet pulls through this CRI plugin, which is what reads ``config_path`` and the
``hosts.toml`` files; ``ctr`` does not. Stopped by its own PID; everything removed.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

from proxy.doctor import cri
from testkit.realclients import _Daemon, _unmount_under, require_binary


class Containerd:
    def __init__(self, registry_toml: str = "") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="gpc-", dir="/tmp"))
        self.socket = str(self.base / "c.sock")
        self.config = self.base / "config.toml"
        self.certs = self.base / "certs.d"
        self.certs.mkdir()
        text = (
            f'version = 2\nroot = "{self.base / "root"}"\nstate = "{self.base / "state"}"\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
            '[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "native"\n'
        )
        self.config.write_text(text + registry_toml)
        tomllib.loads(self.config.read_text())  # a broken recipe fails here, not in the daemon
        self._daemon: _Daemon | None = None

    def version(self) -> str | None:
        try:
            return cri.version(self.socket)
        except cri.CriError:
            return None

    def start(self) -> Containerd:
        command = [require_binary("containerd"), "--config", str(self.config)]
        self._daemon = _Daemon("containerd", command, self.base / "containerd.log")
        try:
            self._daemon.wait_until(lambda: Path(self.socket).exists() and bool(self.version()))
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self._daemon.log_tail() if self._daemon else ""

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
        _unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
