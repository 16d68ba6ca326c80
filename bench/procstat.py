"""Memory and CPU of a process under test, from ``/proc/PID``.

``Memory`` resets the kernel's peak (``clear_refs`` 5, where allowed) and also samples
``VmRSS`` on a thread, so a peak is caught even where the reset is refused::

    with Memory(pid) as memory:
        ...                       # the scenario
    memory.peak                   # bytes
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

SAMPLE_INTERVAL = 0.02
_TICKS = os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU time of every thread of ``pid`` so far (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


class Memory:
    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.sampled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="rss-sampler")
        self._hwm_reset = False

    def __enter__(self) -> Memory:
        if self.pid is not None:
            try:
                Path(f"/proc/{self.pid}/clear_refs").write_text("5")
                self._hwm_reset = True
            except OSError:
                pass
            self._thread.start()
        return self

    def _sample(self) -> None:
        assert self.pid is not None
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.sampled = max(self.sampled, (_status_kib(self.pid, "VmRSS") or 0) * 1024)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.pid is not None and self._hwm_reset:
            self.sampled = max(self.sampled, (_status_kib(self.pid, "VmHWM") or 0) * 1024)

    @property
    def peak(self) -> int:
        return self.sampled
