"""Whether a file's bytes are in the page cache: read them on the loop or not."""

from __future__ import annotations

import os

_PROBE = bytearray(1)
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux only


def in_page_cache(fd: int, offset: int) -> bool:
    """Whether the byte at ``offset`` is in the page cache (read without blocking).

    A hit is read (or sent) on the event loop: a thread hop per read cost more CPU
    than the copy itself, and 1 MiB buffers made in pool threads and freed on the loop
    kept glibc returning pages to the kernel and faulting them back (warm 1 GiB reads
    by 4 clients: 0.68 s of CPU per GiB on threads, 0.28 s inline; bench/RESULTS.md).
    A miss, or a kernel or filesystem without ``RWF_NOWAIT``, goes to a thread.
    Readahead fills pages in order, so callers probe the last byte of a range.
    """
    if _NOWAIT is None:
        return False
    try:
        return os.preadv(fd, [_PROBE], offset, _NOWAIT) == 1
    except OSError:
        return False
