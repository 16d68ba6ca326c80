"""The proxy as a real subprocess (``python -m proxy ... serve``), and CLI runs.

A subprocess, not a thread, when the test needs what only a process has: its own
memory (``VmRSS``/``VmHWM`` from ``/proc/PID/status``), a ``kill -9`` mid-fill, or a
restart on the same cache directory::

    with ProxyProcess(tmp_path / "cache", upstream_url) as proxy:
        httpx.get(proxy.url + "/v2/")
        proxy.peak_rss()                    # VmHWM in bytes
        proxy.kill()                        # SIGKILL, by its own PID
        proxy.start()                       # again, same cache, new port

    result = run_cli(tmp_path / "cache", upstream_url, "warm", "proj/repo/app:1.0")
    assert result.returncode == 0, result.stderr

The environment is the test's minus anything that configures gar-proxy or Google
credentials, so a developer's settings never leak in; ``env`` adds to it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 120.0
_READY = re.compile(r"gar-proxy listening on (https?://127\.0\.0\.1:(\d+))")
_MIRROR_READY = re.compile(r"gar-proxy mirror (\S+) listening on (http://\S+)")
_FOREIGN_PREFIXES = ("GAR_", "GOOGLE_", "GCE_", "GCLOUD_", "CLOUDSDK_")


def proxy_env(cache_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A hermetic environment: no inherited gar-proxy/Google settings, fast retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(
        {
            "HOME": str(cache_dir.parent / "home"),
            "GAR_PROXY_ROUTING_RESOLVE_LOCATIONS": "false",
            "GAR_PROXY_ROUTING_CHECK_REPOSITORIES": "false",
            "GAR_PROXY_TRANSPORT_BACKOFF_BASE": "0.01",
            "GAR_PROXY_TRANSPORT_BACKOFF_MAX": "0.1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def _base_command(cache_dir: Path, upstream: str, auth: str) -> list[str]:
    return [
        sys.executable, "-m", "proxy",
        "--upstream", upstream, "--auth", auth, "--cache-dir", str(cache_dir),
    ]  # fmt: skip


def run_cli(
    cache_dir: Path,
    upstream: str,
    *args: str,
    auth: str = "none",
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``python -m proxy --upstream U --auth A --cache-dir D ARGS...``; never raises on
    a non-zero exit (tests look at ``returncode``, ``stdout`` and ``stderr``)."""
    return subprocess.run(
        [*_base_command(cache_dir, upstream, auth), *args],
        capture_output=True, text=True, timeout=timeout, env=proxy_env(cache_dir, env),
        stdin=subprocess.DEVNULL, check=False, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class ProxyProcess:
    """``gar-proxy serve --listen 127.0.0.1:0`` in a child process, stdout+stderr to a log.

    ``start()`` waits for the ready line and takes the URL from it; ``stop()`` sends
    SIGTERM (SIGKILL after a timeout), ``kill()`` SIGKILL; both only to our own PID.
    """

    def __init__(
        self,
        cache_dir: Path,
        upstream: str,
        *,
        auth: str = "none",
        env: Mapping[str, str] | None = None,
        global_args: Sequence[str] = (),
    ) -> None:
        self.cache_dir = cache_dir
        self.upstream = upstream
        self.auth = auth
        self.env = dict(env or {})
        self.global_args = list(global_args)
        self.log = cache_dir.parent / f"{cache_dir.name}-proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.mirror_urls: dict[str, str] = {}  # registry host -> its own listen URL

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        base = _base_command(self.cache_dir, self.upstream, self.auth)
        return [*base, *self.global_args, "serve", "--listen", "127.0.0.1:0"]

    def start(self, timeout: float = START_TIMEOUT) -> ProxyProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        # setpriv exec()s the proxy (same PID) with a parent-death signal, so a pytest
        # killed without teardown does not leave the proxy behind.
        guard = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*guard, *self.command()], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=proxy_env(self.cache_dir, self.env),
                start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            match = _READY.search(text)
            if match:
                self.url, self.port = match[1], int(match[2])
                self.mirror_urls = {m[1]: m[2] for m in _MIRROR_READY.finditer(text)}
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gar-proxy exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"gar-proxy not ready after {timeout}s:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # --- memory ----------------------------------------------------------------------

    def rss(self) -> int:
        """Resident set size now, in bytes (VmRSS)."""
        return _status_kib(self.pid, "VmRSS") * 1024

    def peak_rss(self) -> int:
        """Peak resident set size since start, in bytes (VmHWM)."""
        return _status_kib(self.pid, "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # --- stopping --------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, as far as the cache can tell)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
