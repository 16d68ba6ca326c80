"""Warm what a team's files name (``gar-proxy warm -f``, ``[[warm]] files``).

The references ``proxy.imagefiles`` finds are normalized as docker would pull them
and resolved through the proxy's own naming, as a client's request would be
(mirrors, locations, the repository checks): what is printed and pulled is what the
proxy will ask GAR for. Each resolved reference is warmed once, however many files
name it (for the warmed platforms, and for any a Dockerfile's ``FROM --platform``
asks). A reference that cannot be resolved (a variable the file does not set, a
registry that is not mirrored) is listed with the reason and nothing else happens
to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy.config import Settings
from proxy.imagefiles import Inputs, Problem, Scan, scan
from proxy.imagefiles.envfile import read_env_files
from proxy.imagefiles.refs import Unresolved, normalize
from proxy.oci.digest import Digest
from proxy.oci.errors import RegistryError
from proxy.oci.names import Repository, parse_tag
from proxy.oci.platform import Platform
from proxy.services.container import Services
from proxy.services.mirrors import resolve_name
from proxy.services.warming import Reporter, warm_image

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}


@dataclass
class Target:
    """One image to warm: where the files name it, and the platforms they ask for."""

    repo: Repository
    reference: str | Digest
    sources: list[str] = field(default_factory=list)
    default_platforms: bool = False  # some file left the platform to the warm
    platforms: set[str] = field(default_factory=set)  # FROM --platform=...

    def __str__(self) -> str:
        sep = "@" if isinstance(self.reference, Digest) else ":"
        return f"{self.repo}{sep}{self.reference}"


@dataclass
class Resolved:
    targets: list[Target]
    problems: list[Problem]
    files: int


def own_addresses(settings: Settings) -> dict[str, str]:
    """``host:port`` spellings of this proxy's sockets: "" for its own names, the
    registry host for a mirror's (``localhost:5000/proj/repo/app`` in a compose file
    is the proxy's own name for ``proj/repo/app``)."""
    found: dict[str, str] = {}
    sockets = [(settings.server.listen, "")]
    sockets += [(m.listen, m.host) for m in settings.routing.mirrors if m.listen]
    for (host, port), registry in sockets:
        host = _WILDCARDS.get(host, host)
        names = {host, "localhost", "127.0.0.1"} if host in ("127.0.0.1", "localhost") else {host}
        found |= {f"{name}:{port}": registry for name in names}
    return found


async def _resolve(services: Services, text: str) -> tuple[Repository, str | Digest]:
    wanted = normalize(text, own=own_addresses(services.settings))
    repo = await resolve_name(services.mirrors, services.locations, wanted.name, ns=None)
    if Digest.is_digest(wanted.reference):
        return repo, Digest.parse(wanted.reference)
    return repo, parse_tag(wanted.reference)


async def resolve(services: Services, found: Scan) -> Resolved:
    """Every reference found, resolved and deduplicated (first met, first warmed)."""
    targets: dict[str, Target] = {}
    problems = list(found.problems)
    for item in found.found:
        try:
            repo, reference = await _resolve(services, item.text)
        except Unresolved as error:
            problems.append(Problem(item.text, item.where, str(error)))
            continue
        except RegistryError as error:
            problems.append(Problem(item.text, item.where, error.message))
            continue
        target = targets.setdefault(str(Target(repo, reference)), Target(repo, reference))
        target.sources.append(item.where)
        if item.platform:
            target.platforms.add(item.platform)
        else:
            target.default_platforms = True
    return Resolved(list(targets.values()), problems, found.files)


async def read_and_resolve(
    services: Services,
    paths: Iterable[Path],
    platforms: list[Platform],
    *,
    build_args: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    env_files: Sequence[Path] = (),
) -> Resolved:
    """``scan`` then ``resolve``. A Dockerfile is read for each platform warmed (this
    host's when none is given) with ``build_args``; a Compose file with ``environ``
    (the process environment, for the CLI) over the ``env_files`` (``ValueError`` if
    one cannot be read), or over its ``.env`` when there are none."""
    environ = environ or {}
    inputs = Inputs(
        platforms=tuple(platforms),
        build_args=dict(build_args or {}),
        environ=environ,
        env_files=read_env_files(list(env_files), environ) if env_files else None,
    )
    return await resolve(services, scan(paths, inputs))


def platforms_for(
    target: Target, platforms: list[Platform], all_platforms: bool = False
) -> list[Platform]:
    """The warm's platforms (none: this host's; all: every one of an index) where a
    file left it open, and those a file asked for."""
    if target.default_platforms and all_platforms:
        return []
    chosen = list(platforms) if target.default_platforms else []
    if target.default_platforms and not chosen:
        chosen = [Platform.host()]
    for text in sorted(target.platforms):
        asked = Platform.parse(text)
        if not any(asked.matches(p) for p in chosen):
            chosen.append(asked)
    return chosen


async def warm_target(
    services: Services,
    target: Target,
    platforms: list[Platform],
    *,
    pin: bool,
    report: Reporter | None = None,
    all_platforms: bool = False,
) -> None:
    """One target: an index for the platforms wanted; a single-platform image
    whatever its platform (the file says it is the one to run)."""
    await warm_image(
        services, target.repo, target.reference,
        platforms_for(target, platforms, all_platforms), pin=pin,
        report=report, strict=False, all_platforms=all_platforms, label=str(target),
    )  # fmt: skip
