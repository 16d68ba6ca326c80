"""Start-up and shutdown are exception-safe: whatever fails, the process says why and
exits, with every descriptor and thread it opened closed.

The preflight's problems (``proxy/commands/preflight.py``) stop ``serve`` and a
command before anything opens. A failure after a resource opened is injected at the
composition root's own seam, ``open_services(on_open=...)``, called after each of
``RESOURCES`` is open and registered; so is a close that raises. Each case runs in a
subprocess whose ``timeout`` is the test's bound: a thread left running (the SQLite
index's is no daemon) would keep the process from exiting, as a non-PEM
``upstream.ca_file`` once did.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.services.container import RESOURCES
from testkit.proxyprocess import proxy_env, run_cli
from testkit.servers import bind_loopback

EXIT_WITHIN = 5.0  # seconds; the subprocess's timeout, not a measurement
UPSTREAM = "http://127.0.0.1:9"


def _one_line(result: subprocess.CompletedProcess[str], *words: str, code: int = 1) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _cases(tmp_path: Path) -> dict[str, tuple[dict[str, str], Path, tuple[str, ...]]]:
    """name -> (environment, cache dir, words the one line must hold)."""
    cache = tmp_path / "cache"
    (tmp_path / "key-dir").mkdir()
    (tmp_path / "ca-dir").mkdir()
    (tmp_path / "not-pem").write_text("not a certificate\n")
    (tmp_path / "a-file").write_text("")
    unwritable = Path("/sys/kernel")  # even root cannot create a file in sysfs
    return {
        "credentials file a directory": (  # as root, only a directory cannot be read
            {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "key-dir")},
            cache,
            ("credentials file", "is a directory"),
        ),
        "CA not PEM": (
            {"GAR_PROXY_UPSTREAM_CA_FILE": str(tmp_path / "not-pem")},
            cache,
            ("upstream.ca_file", "no PEM certificate"),
        ),
        # Settings refuse these two as they load (exit 2, a config error).
        "CA missing": (
            {"GAR_PROXY_UPSTREAM_CA_FILE": str(tmp_path / "gone.pem")},
            cache,
            ("config: upstream.ca_file", "no such file"),
        ),
        "CA a directory": (
            {"GAR_PROXY_UPSTREAM_CA_FILE": str(tmp_path / "ca-dir")},
            cache,
            ("config: upstream.ca_file", "no such file"),
        ),
        "cache dir a file": ({}, tmp_path / "a-file", ("cache dir", "not a directory")),
        "cache dir through a file": ({}, tmp_path / "a-file" / "c", ("cannot create cache dir",)),
        "cache dir not writable": ({}, unwritable, ("not writable", "--cache-dir")),
    }


CASES = (
    "credentials file a directory",
    "CA not PEM",
    "CA missing",
    "CA a directory",
    "cache dir a file",
    "cache dir through a file",
    "cache dir not writable",
)


@pytest.mark.parametrize("case", CASES)
def test_serve_stops_on_each_preflight_problem_with_one_line(tmp_path: Path, case: str) -> None:
    env, cache, words = _cases(tmp_path)[case]
    result = run_cli(
        cache, UPSTREAM, "serve", "--listen", "127.0.0.1:0",
        auth="gcp", env=env, timeout=EXIT_WITHIN,
    )  # fmt: skip
    _one_line(result, *words, code=2 if "config:" in words[0] else 1)


@pytest.mark.parametrize("case", ["CA not PEM", "credentials file a directory", "cache dir a file"])
@pytest.mark.parametrize("command", ["ls"])
def test_a_command_stops_on_a_preflight_problem_with_one_line(
    tmp_path: Path, case: str, command: str
) -> None:
    env, cache, words = _cases(tmp_path)[case]
    result = run_cli(cache, UPSTREAM, command, auth="gcp", env=env, timeout=EXIT_WITHIN)
    _one_line(result, f"gar-proxy {command}:", *words)


def test_serve_stops_when_its_port_is_taken(tmp_path: Path) -> None:
    with bind_loopback() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            tmp_path / "cache", UPSTREAM, "serve", "--listen", f"127.0.0.1:{port}",
            timeout=EXIT_WITHIN,
        )  # fmt: skip
    _one_line(result, "already in use", "--listen")


# Opens the services with a failure injected after one resource (or a close that
# raises), then reports what it left open: descriptors and threads beyond those it had
# before. The injected error is then raised again, uncaught: the exit code says so.
_DRIVER = """
import asyncio, json, os, sys, threading
from proxy.config import load_settings
from proxy.services.container import open_services

step, mode, cache = sys.argv[1:4]
settings = load_settings(None, env=dict(os.environ), overrides={"cache.dir": cache})

class Injected(Exception):
    pass

async def failing_close():
    raise Injected("a close failed")

def on_open(name, stack):
    if name == step and mode == "open":
        raise Injected("failed after " + name)
    if name == step and mode == "close":
        stack.push_async_callback(failing_close)

async def main():
    async with open_services(settings, on_open=on_open) as services:
        await services.index.flush()

fds = set(os.listdir("/proc/self/fd"))
threads = set(threading.enumerate())
try:
    asyncio.run(main())
    raise SystemExit("nothing failed")
except Injected as error:
    for thread in set(threading.enumerate()) - threads:
        thread.join(3)
    left = [fd for fd in set(os.listdir("/proc/self/fd")) - fds
            if os.path.exists(f"/proc/self/fd/{fd}")]  # listdir's own fd is gone
    sessions = os.path.join(cache, "sessions")
    report = {
        "error": str(error),
        "fds": sorted(os.readlink(f"/proc/self/fd/{fd}") for fd in left),
        "threads": [t.name for t in set(threading.enumerate()) - threads if t.is_alive()],
        "sessions": os.listdir(sessions) if os.path.isdir(sessions) else [],
    }
    print(json.dumps(report), flush=True)
    raise
"""


def _drive(tmp_path: Path, step: str, mode: str) -> dict[str, object]:
    cache = tmp_path / "cache"
    env = proxy_env(cache, {
        "GAR_PROXY_UPSTREAM_URL": UPSTREAM,
        "GAR_PROXY_UPSTREAM_AUTH": "gcp",  # a token source to close, never asked
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GAR_PROXY_CACHE_SHARED": "gs://bucket/prefix",  # a shared tier to close
    })  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, step, mode, str(cache)],
        capture_output=True, text=True, timeout=EXIT_WITHIN, env=env, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Injected" in result.stderr.strip().splitlines()[-1], result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("step", RESOURCES)
def test_a_failure_after_each_resource_opens_closes_everything(tmp_path: Path, step: str) -> None:
    report = _drive(tmp_path, step, "open")
    assert report["error"] == f"failed after {step}"
    assert report["fds"] == [] and report["threads"] == []


@pytest.mark.parametrize("step", ["index", "recovery"])
def test_a_close_that_raises_does_not_keep_the_rest_open(tmp_path: Path, step: str) -> None:
    """The failing close runs just before the close of ``step``'s resource (and after
    those opened later): every other close still runs, and the error is not lost."""
    report = _drive(tmp_path, step, "close")
    assert report["error"] == "a close failed"
    assert report["fds"] == [] and report["threads"] == []
    assert report["sessions"] == []  # the session ended: this was no crash


def test_config_check_names_a_ca_file_that_does_not_load(tmp_path: Path) -> None:
    env, cache, words = _cases(tmp_path)["CA not PEM"]
    result = run_cli(cache, UPSTREAM, "config", "check", env=env, timeout=EXIT_WITHIN)
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and all(word in failed[0] for word in words), result.stdout
    assert "Traceback" not in result.stderr
