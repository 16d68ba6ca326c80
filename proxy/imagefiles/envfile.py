"""Compose's environment files (the project's ``.env``, ``--env-file PATH``), read
with the syntax Compose documents (docs.docker.com/compose/how-tos/environment-
variables/variable-interpolation/, ".env file syntax"): ``KEY=VALUE`` or
``KEY: VALUE``, ``export`` ignored, ``#`` comments (after a space when unquoted),
single quotes literal, double quotes with ``\\n \\t \\r \\\\ \\"`` escapes, quoted
values over several lines; unquoted and double-quoted values are interpolated,
the process environment first, then the keys above (Compose ranks the shell above
the file there too)::

    >>> parse_env("A=1 # one\\nB='${A}'\\nC=\\"x${A}\\\\ty\\"\\nD: ${A}-${HOME}\\n", {"HOME": "h"})
    {'A': '1', 'B': '${A}', 'C': 'x1\\ty', 'D': '1-h'}

A value that cannot be interpolated (``${X:?...}``, an unset ``$X``) leaves its key
unset, so a reference that needs it is listed as not resolvable rather than guessed.
"""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path

from proxy.imagefiles.refs import Unresolved
from proxy.imagefiles.variables import expand

MAX_ENV_FILE = 1024 * 1024
MAX_VALUE = 64 * 1024  # per value, once interpolated: A=$B$B, B=$C$C... stays bounded
_LINE = re.compile(r"\s*(?:export\s+)?(?P<key>[^\s=:#]+)\s*[=:]\s?(?P<rest>.*)$", re.S)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}


def parse_env(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The keys and values of an environment file's ``text``. One pass over it: a
    quoted value is scanned once from its quote, however many lines it spans."""
    values: dict[str, str] = {}
    at = 0
    while at < len(text):
        eol = text.find("\n", at)
        eol = len(text) if eol < 0 else eol
        line, start, at = text[at:eol], at, eol + 1
        found = _LINE.match(line) if line.strip()[:1] not in ("", "#") else None
        if found is None:
            continue
        rest = found["rest"]
        quote = rest.lstrip()[:1] if rest.lstrip()[:1] in ("'", '"') else ""
        if quote:
            opened = start + found.start("rest") + len(rest) - len(rest.lstrip()) + 1
            end = _closing_quote(text, quote, opened)
            if end < 0:
                break  # unterminated: it runs to the end, as no other key can follow
            raw = text[opened:end]
            after = text.find("\n", end)
            at = len(text) if after < 0 else after + 1
        else:
            raw = re.split(r"\s#", rest.strip(), maxsplit=1)[0].strip()
        value = _value(raw, quote, ChainMap(dict(environ), values))
        if value is None:
            values.pop(found["key"], None)
        else:
            values[found["key"]] = value
    return values


def _closing_quote(text: str, quote: str, index: int) -> int:
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == quote:
            return index
        index += 1
    return -1


def _value(raw: str, quote: str, lookup: Mapping[str, str]) -> str | None:
    if quote == "'":
        return raw.replace("\\'", "'")
    if quote == '"':
        raw = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), raw, flags=re.S)
    try:
        return expand(raw, lookup, limit=MAX_VALUE)
    except Unresolved:
        return None


def read_env_file(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``path``'s values; ``ValueError`` when it cannot be read (as Compose stops on
    an ``--env-file`` it cannot find)."""
    try:
        if path.stat().st_size > MAX_ENV_FILE:
            raise ValueError(f"env file {path}: over 1 MiB")
        return parse_env(path.read_text(encoding="utf-8"), environ)
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"env file {path}: cannot read it ({error})") from None


def read_env_files(paths: list[Path], environ: Mapping[str, str]) -> dict[str, str]:
    """``--env-file`` values: in order, a later file overriding an earlier one."""
    values: dict[str, str] = {}
    for path in paths:
        values.update(read_env_file(path, {**values, **environ}))
    return values


def dotenv(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``.env`` beside a Compose file; none is no values."""
    try:
        return read_env_file(path, environ) if path.is_file() else {}
    except ValueError:
        return {}


def compose_values(
    compose_file: Path, environ: Mapping[str, str], env_files: Mapping[str, str] | None
) -> dict[str, str]:
    """What a Compose file's ``${VAR}`` reads: the process environment over the
    ``--env-file`` values when given, else over the ``.env`` beside the file."""
    file_values = dotenv(compose_file.parent / ".env", environ) if env_files is None else env_files
    return {**file_values, **environ}
