"""HTTP ``Range`` for blob GETs: one ``bytes=`` range, as registries and clients use it.

>>> parse_range("bytes=0-99", 1000)
(0, 100)
>>> parse_range("bytes=-10", 1000)
(990, 1000)
"""

from __future__ import annotations

import re

from proxy.oci.errors import ErrorCode, RegistryError

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# No blob is 10**19 bytes; a longer number is refused before int() sees it (which takes
# time quadratic in the digits, and refuses more than 4,300 of them with ValueError).
MAX_DIGITS = 19


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Half-open ``(start, end)`` within ``size``; None for no (or an ignorable) Range.

    Raises ``RANGE_INVALID`` (416, with ``Content-Range: bytes */size``) when unsatisfiable.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # several ranges or another unit: RFC 9110 lets us send it all
    first, last = match.group(1), match.group(2)
    if len(first) > MAX_DIGITS or len(last) > MAX_DIGITS:
        raise unsatisfiable(size, f"a Range number longer than {MAX_DIGITS} digits")
    if not first:
        start, end = max(0, size - int(last)), size
        if int(last) == 0:
            raise unsatisfiable(size)
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
        if last and int(last) < start:
            return None  # syntactically invalid: ignore
    if start >= size:
        raise unsatisfiable(size)
    return start, end


def unsatisfiable(size: int, why: str = "requested range") -> RegistryError:
    return RegistryError(
        ErrorCode.RANGE_INVALID,
        f"{why} not satisfiable for a blob of {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )
