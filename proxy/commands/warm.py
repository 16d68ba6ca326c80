"""``gar-proxy warm``: the warming service (``proxy/services/warming.py``) with a
progress bar on a terminal and plain lines otherwise; ``-f PATH`` warms what files
name (``proxy/services/warm_files.py``), ``--dry-run`` prints those references, one
per line, as the proxy will ask GAR for them, and pulls nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from proxy.commands.progress import Progress, Say, Task
from proxy.oci.errors import RegistryError
from proxy.oci.platform import Platform
from proxy.services import warm_files
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


async def run_files(
    services: Services,
    paths: list[Path],
    platforms: list[Platform],
    *,
    pin: bool,
    all_platforms: bool,
    dry_run: bool,
    say: Say,
    warn: Say,
    build_args: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    env_files: Sequence[Path] = (),
) -> int:
    """Warm every image the files name, each once; 1 when one could not be warmed."""
    found = await warm_files.read_and_resolve(
        services, paths, platforms, build_args=build_args, environ=environ, env_files=env_files
    )
    for problem in found.problems:
        if problem.text == problem.where:  # a whole file
            warn(f"skipped {problem.where}: {problem.reason}")
        else:
            warn(f"cannot warm {problem.text} ({problem.where}): {problem.reason}")
    if dry_run:
        for target in found.targets:
            say(str(target))
        return 0
    failed = 0
    with Progress.for_output(say) as progress:
        for target in found.targets:
            try:
                await warm_files.warm_target(
                    services, target, platforms, pin=pin, report=_Bar(progress),
                    all_platforms=all_platforms,
                )  # fmt: skip
            except (RegistryError, ValueError) as error:
                failed += 1
                warn(f"failed to warm {target}: {getattr(error, 'message', error)}")
    say(
        f"{len(found.targets) - failed} of {len(found.targets)} image(s) warmed from "
        f"{found.files} file(s); {len(found.problems)} reference(s) could not be resolved"
    )
    return 1 if failed else 0
