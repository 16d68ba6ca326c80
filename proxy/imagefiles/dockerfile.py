"""Images a Dockerfile pulls: its ``FROM`` lines, and ``COPY --from`` / ``RUN
--mount=from=`` naming an image rather than a stage.

A build stage's name (``FROM base AS build``, later ``FROM build``) is not an image,
nor is ``scratch``. ``ARG``s declared before the first ``FROM`` are the only ones a
``FROM`` may use; their defaults are substituted, and one without a default leaves
the line unresolved (listed with the reason: it is given with ``--build-arg``). The
automatic platform ``ARG``s (``$BUILDPLATFORM``, ``$TARGETARCH``...) are the platform
being warmed for. ``FROM --platform=linux/arm64`` asks for that platform; a
``$BUILDPLATFORM``/``$TARGETPLATFORM`` one for the warmed platform. Line continuations,
the ``# escape=`` directive, comments and here-documents are read as docker reads
them::

    >>> text = 'ARG PY=3.12\\nFROM python:${PY}-slim AS build\\nFROM build\\nFROM scratch\\n'
    >>> [(f.text, f.line) for f in dockerfile_images(text, "Dockerfile") if isinstance(f, Found)]
    [('python:3.12-slim', 2)]
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

from proxy.imagefiles.found import Found, Problem
from proxy.imagefiles.refs import Unresolved, expand
from proxy.oci.platform import Platform

_DIRECTIVE = re.compile(r"#\s*escape\s*=\s*(\S)\s*$", re.I)
_HEREDOC = re.compile(r"<<-?\s*[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?")
_ARG = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<value>.*))?", re.S)


def _escape_char(lines: list[str]) -> str:
    for line in lines:  # parser directives: only at the very top, before anything else
        found = _DIRECTIVE.match(line.strip())
        if found:
            return found[1]
        if not line.strip().startswith("#"):
            break
    return "\\"


def instructions(text: str) -> Iterator[tuple[int, str, str]]:
    """(first line number, INSTRUCTION, arguments) for each instruction."""
    lines = text.splitlines()
    escape = _escape_char(lines)
    number, start = 0, 0
    parts: list[str] = []
    heredoc: str | None = None
    while number < len(lines):
        line = lines[number]
        number += 1
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        stripped = line.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not parts:
            start = number
        if stripped.endswith(escape):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        joined = " ".join(parts)
        parts = []
        instruction, _, rest = joined.partition(" ")
        opened = _HEREDOC.search(rest) if instruction.upper() in ("RUN", "COPY", "ADD") else None
        heredoc = opened[1] if opened else None
        yield start, instruction.upper(), rest.strip()


def _split(rest: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError:
        return rest.split()


def _flags(words: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    flags: dict[str, list[str]] = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags.setdefault(key.lower(), []).append(value)
    return flags, words


def _builtins(platform: Platform) -> dict[str, str]:
    variant = platform.variant or ""
    text = str(platform)
    return {
        **{f"{side}PLATFORM": text for side in ("BUILD", "TARGET")},
        **{f"{side}OS": platform.os for side in ("BUILD", "TARGET")},
        **{f"{side}ARCH": platform.architecture for side in ("BUILD", "TARGET")},
        **{f"{side}VARIANT": variant for side in ("BUILD", "TARGET")},
    }


def _declare(rest: str, args: dict[str, str | None]) -> None:
    for word in _split(rest):
        found = _ARG.fullmatch(word)
        if found is None:
            continue
        value = found["value"]
        known = {k: v for k, v in args.items() if v is not None}
        try:
            args[found["name"]] = None if value is None else expand(value, known)
        except Unresolved:
            args[found["name"]] = None


def _platform(flags: dict[str, list[str]], values: dict[str, str], auto: str) -> str | None:
    raw = (flags.get("platform") or [""])[0]
    if not raw:
        return None
    try:
        chosen = expand(raw, values)
    except Unresolved:
        return None
    return None if chosen == auto else chosen  # $BUILDPLATFORM: the warmed platform


def dockerfile_images(
    text: str, where: str, platform: Platform | None = None
) -> list[Found | Problem]:
    """What the Dockerfile at ``where`` pulls, for a build on ``platform`` (this host's)."""
    platform = platform or Platform.host()
    builtins = _builtins(platform)
    args: dict[str, str | None] = {}  # before the first FROM; None: no default
    stages: set[str] = set()
    seen_from = False
    out: list[Found | Problem] = []
    for line, instruction, rest in instructions(text):
        if instruction == "ARG" and not seen_from:
            _declare(rest, args)
        elif instruction == "FROM":
            seen_from = True
            out += _from(rest, where, line, args, builtins, stages)
        elif instruction in ("COPY", "ADD", "RUN"):
            out += _from_flags(rest, where, line, stages)
    return out


def _from(
    rest: str,
    where: str,
    line: int,
    args: dict[str, str | None],
    builtins: dict[str, str],
    stages: set[str],
) -> list[Found | Problem]:
    flags, words = _flags(_split(rest))
    if not words:
        return [Problem("FROM", f"{where}:{line}", "FROM without an image")]
    earlier = set(stages)  # a stage may name the image it starts from: FROM alpine AS alpine
    if len(words) >= 3 and words[1].lower() == "as":
        stages.add(words[2].lower())
    values = {**builtins, **{k: v for k, v in args.items() if v is not None}}
    try:
        image = expand(words[0], values)
    except Unresolved as error:
        return [Problem(words[0], f"{where}:{line}", _why(str(error), args, builtins))]
    if image.lower() == "scratch" or image.lower() in earlier:
        return []
    chosen = _platform(flags, values, builtins["TARGETPLATFORM"])
    if chosen is not None:
        try:
            Platform.parse(chosen)
        except ValueError as error:
            return [Problem(image, f"{where}:{line}", str(error))]
    return [Found(image, f"{where}:{line}", chosen, line)]


def _why(error: str, args: dict[str, str | None], builtins: dict[str, str]) -> str:
    name = error.split()[0].lstrip("$") if error.startswith("$") else ""
    if name in args:
        return f"ARG {name} has no default (it is given with --build-arg)"
    if name and name not in builtins:
        return f"${name} is not an ARG declared before the first FROM"
    return error


def _from_flags(rest: str, where: str, line: int, stages: set[str]) -> list[Found | Problem]:
    """``COPY --from=IMAGE`` and ``RUN --mount=...,from=IMAGE``: an image unless it is a
    stage's name or index."""
    flags, _ = _flags(_split(rest))
    sources = list(flags.get("from", []))
    for mount in flags.get("mount", []):
        options = dict(part.partition("=")[::2] for part in mount.split(","))
        if options.get("from"):
            sources.append(options["from"])
    out: list[Found | Problem] = []
    for source in sources:
        if source.isdigit() or source.lower() in stages:
            continue
        if "$" in source:
            out.append(Problem(source, f"{where}:{line}", "variables in --from are not expanded"))
        else:
            out.append(Found(source, f"{where}:{line}", None, line))
    return out
