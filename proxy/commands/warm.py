"""``gar-proxy warm``: the warming service (``proxy/services/warming.py``) with a
progress bar on a terminal and plain lines otherwise."""

from __future__ import annotations

from proxy.commands.progress import Progress, Say, Task
from proxy.oci.platform import Platform
from proxy.services.container import Services
from proxy.services.warming import warm


class _Bar:
    """The warming service's ``Reporter`` over the CLI's ``Progress``."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: Task | None = None

    def start(self, total: int) -> None:
        self._task = self._progress.task("warming", total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._task.advance(amount)

    def say(self, text: str) -> None:
        self._progress.say(text)


async def run(
    services: Services,
    image: str,
    platforms: list[Platform],
    *,
    pin: bool,
    all_platforms: bool,
    say: Say,
) -> int:
    with Progress.for_output(say) as progress:
        await warm(
            services, image, platforms, pin=pin, report=_Bar(progress),
            all_platforms=all_platforms,
        )  # fmt: skip
    return 0
