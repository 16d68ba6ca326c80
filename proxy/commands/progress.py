"""Progress for the CLI: a rich bar on a terminal, plain lines otherwise (CI logs,
pipes), so a log never fills with redraws and a person never stares at silence::

    with Progress.for_output(say) as progress:
        task = progress.task("blobs", total=41_900_000)
        task.advance(1_048_576)
        progress.say("fetched sha256:...  41.9 MiB")
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

Say = Callable[[str], None]


class Task:
    def __init__(self, bar: Any = None, task_id: Any = None) -> None:
        self._bar, self._id = bar, task_id

    def advance(self, amount: float) -> None:
        if self._bar is not None:
            self._bar.advance(self._id, amount)


class Progress:
    def __init__(self, say: Say, *, live: bool) -> None:
        self._say = say
        self._bar: Any = None
        if live:
            from rich.progress import (  # only on a terminal: rich is slow to import
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
            )  # fmt: skip

    @classmethod
    def for_output(cls, say: Say) -> Progress:
        """Live when standard output is a terminal (the CLI's ``say`` prints there)."""
        return cls(say, live=sys.stdout.isatty())

    def task(self, description: str, total: float | None) -> Task:
        if self._bar is None:
            return Task()
        return Task(self._bar, self._bar.add_task(description, total=total))

    def say(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            self._say(text)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
