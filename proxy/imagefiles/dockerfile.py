"""Images a Dockerfile pulls: its ``FROM`` lines, and ``COPY --from`` / ``RUN
--mount=from=`` naming an image rather than a stage.

A build stage's name (``FROM base AS build``, later ``FROM build``) is not an image,
nor is ``scratch``. ``FROM`` reads the ARGs declared before the first ``FROM`` and the
automatic platform ARGs, as buildkit does (``dockerfile2llb``'s ``buildMetaArgs`` and
``defaultArgs``): a ``--build-arg`` replaces a declared ARG's default, and sets an
automatic one (``BUILDPLATFORM``...) whether declared or not, but no other name; a
default may use the ARGs above it. An ARG without a default or a ``--build-arg``
leaves a ``FROM`` naming it unresolved, listed with the reason (docker would pull an
empty name). ``$TARGETPLATFORM`` and friends are the platform being warmed (each of
them in turn), ``$BUILDPLATFORM`` the one building (this host's unless a
``--build-arg`` says otherwise); ``FROM --platform=linux/arm64`` asks for that one.
Line continuations, the ``# escape=`` directive, comments and here-documents are read
as docker reads them::

    >>> text = 'ARG PY=3.12\\nFROM python:${PY}-slim AS build\\nFROM build\\nFROM scratch\\n'
    >>> [(f.text, f.line) for f in dockerfile_images(text, "Dockerfile") if isinstance(f, Found)]
    [('python:3.12-slim', 2)]
    >>> given = Inputs(build_args={"PY": "3.13"})
    >>> [f.text for f in dockerfile_images(text, "Dockerfile", given) if isinstance(f, Found)]
    ['python:3.13-slim']
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from proxy.imagefiles.found import Found, Problem
from proxy.imagefiles.refs import Unresolved
from proxy.imagefiles.variables import Inputs, expand
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


def _builtins(target: Platform, build: Platform, build_args: Mapping[str, str]) -> dict[str, str]:
    """The automatic platform ARGs, which a ``--build-arg`` of the same name overrides
    (buildkit's ``defaultArgs``)."""
    found = {"TARGETSTAGE": "default"}
    for side, platform in (("BUILD", build), ("TARGET", target)):
        found |= {
            f"{side}PLATFORM": str(platform), f"{side}OS": platform.os,
            f"{side}OSVERSION": platform.os_version or "", f"{side}ARCH": platform.architecture,
            f"{side}VARIANT": platform.variant or "",
        }  # fmt: skip
    return {k: build_args.get(k, v) for k, v in found.items()}


@dataclass
class _Scope:
    """The ARGs a ``FROM`` can use: the automatic ones and those declared before the
    first ``FROM`` (a ``--build-arg`` replacing a declared one's default), and why an
    unset one has no value."""

    values: dict[str, str]
    build_args: Mapping[str, str]
    target: str  # the platform being warmed (what FROM without --platform asks)
    missing: dict[str, str] = field(default_factory=dict)

    def declare(self, rest: str) -> None:
        for word in _split(rest):
            found = _ARG.fullmatch(word)
            if found is None:
                continue
            name, default = found["name"], found["value"]
            if name in self.build_args:
                self.values[name] = self.build_args[name]
            elif default is not None:
                try:
                    self.values[name] = expand(default, self.values, dollar_escape=False)
                except Unresolved as error:  # keep the first cause: A=$B, B's default...
                    self.values.pop(name, None)
                    self.missing[name] = self.missing.get(
                        _named(error), f"ARG {name}'s default: {error}"
                    )
                    continue
            elif name not in self.values:  # ARG TARGETARCH keeps the automatic value
                self.missing[name] = f"ARG {name} has no default (it is given with --build-arg)"
                continue
            self.missing.pop(name, None)

    def why(self, error: Unresolved) -> str:
        name, text = _named(error), str(error)
        if name in self.missing:
            return self.missing[name]
        if name in self.build_args:
            return f"--build-arg {name} is given, but no ARG {name} before the first FROM"
        if name:
            return f"${name} is not an ARG declared before the first FROM"
        return text


def _named(error: Unresolved) -> str:
    """The variable an "$NAME is not set" names; "" for any other reason."""
    text = str(error)
    return text.split()[0].lstrip("$") if text.startswith("$") else ""


def dockerfile_images(
    text: str, where: str, inputs: Inputs | Platform | None = None
) -> list[Found | Problem]:
    """What the Dockerfile at ``where`` pulls, built for each of ``inputs.platforms``
    (this host's when none; a bare ``Platform``: that one) on ``inputs.build_platform``
    (this host's), with ``inputs.build_args``. An image whose name differs by target
    platform (``base-${TARGETARCH}``) is found for that platform only."""
    if not isinstance(inputs, Inputs):
        inputs = Inputs(platforms=(inputs,) if inputs else ())
    targets = inputs.platforms or (Platform.host(),)
    build = inputs.build_platform or Platform.host()
    parsed = list(instructions(text))
    runs = [_evaluate(parsed, where, t, build, inputs.build_args) for t in targets]
    everywhere = set(runs[0]).intersection(*runs[1:])
    out: dict[Found | Problem, None] = {}  # ordered, and 100,000 FROMs stay linear
    for target, items in zip(targets, runs, strict=True):
        for item in items:
            if isinstance(item, Found) and item.platform is None and item not in everywhere:
                item = replace(item, platform=str(target))
            out.setdefault(item)
    return list(out)


def _evaluate(
    parsed: list[tuple[int, str, str]],
    where: str,
    target: Platform,
    build: Platform,
    build_args: Mapping[str, str],
) -> list[Found | Problem]:
    scope = _Scope(_builtins(target, build, build_args), build_args, str(target))
    stages: set[str] = set()
    seen_from = False
    out: list[Found | Problem] = []
    for line, instruction, rest in parsed:
        if instruction == "ARG" and not seen_from:
            scope.declare(rest)
        elif instruction == "FROM":
            seen_from = True
            out += _from(rest, f"{where}:{line}", line, scope, stages)
        elif instruction in ("COPY", "ADD", "RUN"):
            out += _from_flags(rest, where, line, stages)
    return out


def _from(rest: str, at: str, line: int, scope: _Scope, stages: set[str]) -> list[Found | Problem]:
    flags, words = _flags(_split(rest))
    if not words:
        return [Problem("FROM", at, "FROM without an image")]
    earlier = set(stages)  # a stage may name the image it starts from: FROM alpine AS alpine
    if len(words) >= 3 and words[1].lower() == "as":
        stages.add(words[2].lower())
    try:
        image = expand(words[0], scope.values, dollar_escape=False)
    except Unresolved as error:
        return [Problem(words[0], at, scope.why(error))]
    if not image.strip():
        return [Problem(words[0], at, "the image name is empty once substituted")]
    if image.lower() == "scratch" or image.lower() in earlier:
        return []
    raw = (flags.get("platform") or [""])[0]
    if not raw:
        return [Found(image, at, None, line)]
    try:
        chosen = Platform.parse(expand(raw, scope.values, dollar_escape=False))
    except Unresolved as error:
        return [Problem(image, at, f"--platform={raw}: {scope.why(error)}")]
    except ValueError as error:
        return [Problem(image, at, str(error))]
    return [Found(image, at, None if str(chosen) == scope.target else str(chosen), line)]


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
