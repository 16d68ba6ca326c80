"""deploy/ring/nginx.conf (and haproxy.cfg) on loopback, for tests and the bench.

The very files deploy/ring ships, with their three ``server gar-proxy-N...`` lines
replaced by the given replicas and their port by a loopback one::

    nginx = Nginx(tmp_path / "lb").start(["http://127.0.0.1:41001", ...])
    httpx.get(nginx.url + "/v2/")
    nginx.pids()            # master and workers (CPU is spent in the workers)
    nginx.stop()            # SIGTERM to its own PID
"""

from __future__ import annotations

import contextlib
import re
import socket
from pathlib import Path

from testkit.realclients import DaemonExited, _Daemon, free_port, require_binary

RING = Path(__file__).resolve().parent.parent / "deploy" / "ring"
REPLICA_LINE = re.compile(r"(?m)^\s*server gar-proxy-\d.*\n")
PORT_ATTEMPTS = 5


def nginx_config(replicas: list[str], port: int, root: Path) -> str:
    """deploy/ring/nginx.conf: loopback servers and port, pid, logs and temp files
    under ``root`` (nginx runs unprivileged, in the foreground)."""
    text = (RING / "nginx.conf").read_text()
    servers = "".join(
        f"        server {r.removeprefix('http://')} max_fails=1 fail_timeout=10s;\n"
        for r in replicas
    )
    text, count = REPLICA_LINE.subn("", text)
    if count != 3:
        raise ValueError(f"deploy/ring/nginx.conf: expected 3 server lines, found {count}")
    text = text.replace("keepalive 64;", servers + "        keepalive 64;")
    text = text.replace("listen 5000;", f"listen 127.0.0.1:{port};")
    temp = "".join(
        f"    {kind}_temp_path {root}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp)
    return f"daemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n" + text


def haproxy_config(replicas: list[str], port: int) -> str:
    """deploy/ring/haproxy.cfg: loopback servers and port."""
    text = (RING / "haproxy.cfg").read_text()
    servers = "".join(
        f"    server r{n} {r.removeprefix('http://')}\n" for n, r in enumerate(replicas)
    )
    text, count = REPLICA_LINE.subn("", text)
    if count != 3:
        raise ValueError(f"deploy/ring/haproxy.cfg: expected 3 server lines, found {count}")
    return text.replace("bind :5000", f"bind 127.0.0.1:{port}") + servers


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


class Nginx:
    """Debian's nginx running the ring's config in the foreground (``daemon off``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self._daemon: _Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._daemon.proc.pid if self._daemon is not None else None

    def start(self, replicas: list[str]) -> Nginx:
        binary = require_binary("nginx")
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "nginx.conf"
        for _ in range(PORT_ATTEMPTS):  # a free port is free only until someone binds it
            port = free_port()
            conf.write_text(nginx_config(replicas, port, self.root))
            command = [binary, "-p", str(self.root), "-c", str(conf), "-e", "stderr"]
            daemon = _Daemon("nginx", command, self.root / "nginx.log")
            try:
                daemon.wait_until(lambda: _listening(port))  # noqa: B023 (waited for here)
            except DaemonExited as exc:
                if "Address already in use" in exc.log:
                    continue
                raise
            self.port, self._daemon = port, daemon
            return self
        raise RuntimeError(f"nginx found no free port in {PORT_ATTEMPTS} tries")

    def pids(self) -> list[int]:
        """The master and its workers (the workers proxy; the master only supervises)."""
        if self.pid is None:
            return []
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            return [self.pid, *(int(p) for p in children.read_text().split())]
        return [self.pid]

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
