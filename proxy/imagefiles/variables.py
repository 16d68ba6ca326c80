"""Variables in the files a team has, and where their values come from.

``expand`` substitutes ``$NAME`` and ``${NAME}``, with the forms Dockerfiles and
Compose files write (``${NAME:-default}``, ``${NAME-default}``, ``${NAME:+alt}``,
``${NAME+alt}``, ``${NAME:?error}``, ``${NAME?error}``; Compose's ``$$`` is one
dollar), and raises ``Unresolved`` saying which variable is missing: an unset
variable without a default is never guessed, not even as the empty string Compose
would put there (``redis:${TAG}`` would pull ``redis:``)::

    >>> expand("python:${PY:-3.12}-slim", {})
    'python:3.12-slim'
    >>> expand("$REGISTRY/app", {"REGISTRY": "ghcr.io/org"})
    'ghcr.io/org/app'
    >>> expand("app:${TAG:?set TAG}", {})
    Traceback (most recent call last):
    ...
    proxy.imagefiles.refs.Unresolved: required variable TAG is missing a value: set TAG

Where values come from (``Inputs``): a Dockerfile's ``ARG``s, overridden by
``--build-arg`` (``dockerfile.py``); a Compose file's ``.env`` beside it, or the
``--env-file``s instead, both under the process environment, as Compose ranks them
(environment first; ``--env-file``s replace the project's ``.env``; a later one
overrides an earlier one; ``envfile.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.imagefiles.refs import Unresolved
from proxy.oci.platform import Platform

MAX_DEPTH = 16  # ${A:-${B:-...}}: no file nests deeper; a hostile one would recurse
MAX_LENGTH = 4096  # a reference is at most ~500 characters (255 name, 128 tag, digest)
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+?])(?P<word>.*))?", re.S)


@dataclass(frozen=True)
class Inputs:
    """What reading files takes beside the files: the platforms a Dockerfile is built
    for (none: this host's) and on (``$BUILDPLATFORM``; None: this host's), the
    ``--build-arg``s, the process environment and the ``--env-file`` values (None:
    each Compose file's ``.env``) for Compose."""

    platforms: tuple[Platform, ...] = ()
    build_platform: Platform | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    env_files: Mapping[str, str] | None = None


def parse_build_args(items: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``NAME=VALUE`` (repeatable; the last wins), or ``NAME`` alone: the value from
    the environment, as ``docker build --build-arg`` takes it (not given if unset)."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"--build-arg {item!r}: expected NAME=VALUE")
        if sep:
            found[name] = value
        elif name in environ:
            found[name] = environ[name]
    return found


def expand(
    text: str,
    values: Mapping[str, str],
    *,
    defaults: bool = True,
    dollar_escape: bool = True,
    limit: int = MAX_LENGTH,
    depth: int = 0,
) -> str:
    """``text`` with its variables substituted from ``values``. ``defaults=False``:
    only ``$NAME``/``${NAME}`` (GitLab CI's forms); ``dollar_escape=False``: ``$$`` is
    not Compose's escape (a Dockerfile's). Defaults may hold variables, up to
    ``MAX_DEPTH`` deep; a result longer than ``limit`` is ``Unresolved``."""
    if depth > MAX_DEPTH:
        raise Unresolved(f"variables nested more than {MAX_DEPTH} deep")
    out: list[str] = []
    size, at = 0, 0
    while (dollar := text.find("$", at)) >= 0:
        piece, after = _one(text, dollar, values, defaults, dollar_escape, limit, depth)
        out += [text[at:dollar], piece]
        size += dollar - at + len(piece)
        if size > limit:
            raise Unresolved(f"longer than {limit} characters once substituted")
        at = after
    if size + len(text) - at > limit:
        raise Unresolved(f"longer than {limit} characters once substituted")
    return "".join(out) + text[at:]


def _one(
    text: str,
    dollar: int,
    values: Mapping[str, str],
    defaults: bool,
    dollar_escape: bool,
    limit: int,
    depth: int,
) -> tuple[str, int]:
    """The substitution of the ``$`` at ``dollar``, and where the text goes on."""
    if dollar_escape and text.startswith("$$", dollar):  # Compose's escaped dollar
        return "$", dollar + 2
    if text.startswith("${", dollar):
        close = _closing(text, dollar + 2)
        inner = text[dollar + 2 : close]
        return _braced(inner, values, defaults, dollar_escape, limit, depth), close + 1
    if bare := _BARE.match(text, dollar + 1):
        return _value(bare[0], values), bare.end()
    return "$", dollar + 1  # "$", "$1", "$-": a dollar, as docker and Compose keep it


def _closing(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        if text.startswith("${", index):
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise Unresolved(f"unclosed ${{ in {_short(text)!r}")


def _braced(
    inner: str,
    values: Mapping[str, str],
    defaults: bool,
    dollar_escape: bool,
    limit: int,
    depth: int,
) -> str:
    braced = _BRACED.fullmatch(inner)
    if braced is None or (braced["op"] and not defaults):
        raise Unresolved(f"unsupported substitution ${{{_short(inner)}}}")
    name, op, word = braced["name"], braced["op"], braced["word"] or ""
    value = values.get(name)
    if op in (":?", "?"):
        if value is None or (op == ":?" and value == ""):
            why = f": {_short(word)}" if word else ""
            raise Unresolved(f"required variable {name} is missing a value{why}")
        return value
    if op in (":-", "-"):
        unset = value is None or (op == ":-" and value == "")
        if not unset:
            return str(value)
    elif op in (":+", "+"):
        if value is None or (op == ":+" and value == ""):
            return ""
    else:
        return _value(name, values)
    return expand(
        word, values, defaults=defaults, dollar_escape=dollar_escape, limit=limit,
        depth=depth + 1,
    )  # fmt: skip


def _value(name: str, values: Mapping[str, str]) -> str:
    value = values.get(name)
    if value is None:
        raise Unresolved(f"${name} is not set and has no default")
    return value


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
