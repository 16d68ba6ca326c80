"""A log stream that fails (stderr's pipe closed: the log collector died) must
not make the event loop spin. _BatchingHandler.flush runs as a loop callback without
handleError; its exception is logged by asyncio, which schedules another flush, ..."""

from __future__ import annotations

import asyncio
import io
import logging

from proxy import logs


class Broken(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def write(self, s: str) -> int:
        self.calls += 1
        raise BrokenPipeError(32, "Broken pipe")

    def isatty(self) -> bool:
        return False


def test_a_broken_log_stream_does_not_spin_the_loop() -> None:
    stream = Broken()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("info", "json", stream)

        async def main() -> None:
            logging.getLogger("gar_proxy").info("one line")
            await asyncio.sleep(0.3)

        asyncio.run(main())
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert stream.calls <= 5, f"{stream.calls} writes for one log line"
