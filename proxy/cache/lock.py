"""Who else has this cache directory open: start-up recovery runs only when nobody does.

Start-up recovery deletes temp files and upload bytes that no row owns, which is
right after a crash and wrong while another process (a second proxy, or ``gar-proxy
gc``/``verify``/``warm`` next to a running one) is filling those very files. Every
process holds a shared ``flock`` on ``CACHE/lock`` for as long as it has the cache
open; one that gets it exclusively at start-up is alone, so it may recover::

    lock = await CacheLock.acquire(cache_dir)
    if lock.alone:
        ...  # clean temp files, reconcile the index
    lock.opened()      # from here on, others may start (and will not recover)
    ...
    lock.release()

Start-ups are serialized by a second lock (``CACHE/lock.startup``), so the change from
exclusive to shared, which ``flock`` does not make atomic, has no gap another
process could slip through.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path


class CacheLock:
    def __init__(self, users: int, startup: int | None, alone: bool) -> None:
        self._users = users
        self._startup = startup
        self.alone = alone

    @classmethod
    async def acquire(cls, root: Path) -> CacheLock:
        """Wait for other start-ups to finish; then see whether anyone uses the cache."""
        startup = os.open(root / "lock.startup", os.O_RDWR | os.O_CREAT, 0o644)
        users = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await asyncio.to_thread(fcntl.flock, startup, fcntl.LOCK_EX)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                fcntl.flock(users, fcntl.LOCK_SH)  # others hold it shared: no wait
                alone = False
        except BaseException:
            os.close(users)
            os.close(startup)
            raise
        return cls(users, startup, alone)

    def opened(self) -> None:
        """Recovery (if any) is done: share the cache and let the next start-up go on."""
        if self._startup is None:
            return
        if self.alone:
            fcntl.flock(self._users, fcntl.LOCK_SH)
        os.close(self._startup)  # closing releases the start-up lock
        self._startup = None

    def release(self) -> None:
        self.opened()
        with contextlib.suppress(OSError):
            os.close(self._users)


def open_elsewhere(root: Path) -> bool:
    """Whether another process has the cache open now (it holds ``lock``), so that its
    memory, fills and readers are not what this process would see (``gar-proxy
    refresh|purge`` then ask that process instead)."""
    try:
        users = os.open(root / "lock", os.O_RDWR)
    except OSError:
        return False  # never opened (or not ours to open: opening the cache will say)
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(users)  # releases the lock if this process took it
    return False
