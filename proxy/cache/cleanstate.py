"""Whether start-up may skip reconciling blob files with the index.

Reconciling (``BlobCache.recover``) lists every blob file and loads every blob row:
O(n) work that only a crash or manual meddling makes necessary. Two records let a
start-up tell that neither happened since the cache was last closed:

- ``CACHE/sessions/``: one file per process that has the cache open, created at
  open and removed at a clean close. A start-up that is alone (``proxy.cache.lock``)
  and still finds one knows that process crashed.
- ``CACHE/clean.json``: written at each clean close: the blob rows' count and bytes
  and the modification times of the blob directories. A file added or removed by
  hand changes its directory's time; a row deleted by hand changes the count.

A cache with neither (new, or made by an older version) is reconciled once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

STATE = "clean.json"
SESSIONS = "sessions"


@dataclass(frozen=True)
class CleanState:
    blobs: int
    bytes: int
    dirs: dict[str, int]  # blob directory (relative) -> st_mtime_ns


def directory_times(blobs: Path) -> dict[str, int]:
    """``blobs/<alg>`` and ``blobs/<alg>/<ab>``: a few hundred stats, whatever n is."""
    times = {}
    for algorithm in os.scandir(blobs):
        times[algorithm.name] = algorithm.stat().st_mtime_ns
        for prefix in os.scandir(algorithm.path):
            times[f"{algorithm.name}/{prefix.name}"] = prefix.stat().st_mtime_ns
    return times


def read_state(root: Path) -> CleanState | None:
    try:
        data = json.loads((root / STATE).read_text())
        return CleanState(int(data["blobs"]), int(data["bytes"]), dict(data["dirs"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_state(root: Path) -> None:
    (root / STATE).unlink(missing_ok=True)


def write_state(root: Path, state: CleanState) -> None:
    temp = root / f"{STATE}.{secrets.token_hex(4)}"
    temp.write_text(json.dumps(asdict(state)))
    os.replace(temp, root / STATE)


class Session:
    """This process's entry in ``CACHE/sessions/``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / SESSIONS
        self.tracked = self.dir.is_dir()  # False: a cache from before sessions
        self.dir.mkdir(exist_ok=True)
        self.path = self.dir / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.path.touch()

    def others(self) -> list[Path]:
        """Every other process's entry; when alone, those are crashed processes'."""
        return [path for path in self.dir.iterdir() if path != self.path]

    def forget(self, entries: list[Path]) -> None:
        for path in entries:
            path.unlink(missing_ok=True)

    def end(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
