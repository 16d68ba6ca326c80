"""Sizes and durations for people: ``41.9 MiB``, ``3 s``."""

from __future__ import annotations

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: float) -> str:
    """Binary units, one decimal above bytes.

    >>> human_size(0), human_size(1023), human_size(43_935_744), human_size(5 * 1024**4)
    ('0 bytes', '1023 bytes', '41.9 MiB', '5.0 TiB')
    """
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    """Seconds, minutes or hours.

    >>> human_seconds(59), human_seconds(3000), human_seconds(7200)
    ('59 s', '50 min', '2.0 h')
    """
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
