"""``config.example.toml``, written from the declarations (``gar-proxy config example``).

Every setting is there with its true default, its environment name(s) and its doc
line; loading the file gives the same settings as loading nothing
(``tests/test_config_example.py``). Lists of tables (``[[mirrors]]``, ...) are empty
by default and shown as commented examples; the two paths whose default depends on
the environment are commented out with that default spelled as a user would write it.

>>> render_value(parse_size, 50 * 1024**3), render_value(parse_duration, 300.0)
('"50GiB"', '"5m"')
"""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.config.fields import Spec
from proxy.config.groups import GROUPS, SPECS
from proxy.config.renamed import spelling
from proxy.config.values import Choice, parse_duration, parse_listen, parse_size

WIDTH = 92
HEADER = """\
# gar-proxy settings: every key, with its default. Written from the declarations in
# proxy/config/groups.py by `gar-proxy config example`; tests/test_config_example.py
# checks that the two agree.
#
# Precedence: this file < environment variables < command-line flags. Each key has one
# environment name, GAR_PROXY_<SECTION>_<KEY>, shown above it with any name the
# original design or Google gave it. Check what is in effect with:
#   gar-proxy --config config.toml config check
"""
# Defaults that depend on the environment (proxy.config.loader), as a user writes them.
DERIVED = {
    "cache.dir": "~/.cache/gar-proxy",
    "gcp.adc_file": "~/.config/gcloud/application_default_credentials.json",
}
# Lists of tables: empty by default, shown as a commented example.
EXAMPLES = {
    "routing.routes": """\
[[routing.routes]]
prefix = "my-proj/eu-images"               # PROJECT or PROJECT/REPOSITORY
location = "europe-west1"
""",
    "routing.mirrors": """\
[[mirrors]]
host = "docker.io"                         # also ghcr.io, quay.io, ...
repository = "my-proj/dockerhub-remote"    # PROJECT/REPOSITORY of the remote repository
location = "us"                            # optional: else routes, the API, routing.location
listen = "127.0.0.1:5001"                  # optional: a socket that is only this mirror's
""",
    "cache.warm": """\
[[warm]]
image = "docker.io/library/python"
tags = '^3\\.12'                            # a regex, searched; default ^latest$
interval = "6h"
platforms = ["linux/amd64"]                # default: the host's
""",
    "cache.tag_policies": """\
[[tag_policies]]
tag = 'v?\\d+\\.\\d+\\.\\d+'                    # a regex the whole tag matches: semver never moves
immutable = true                           # never revalidated (gar-proxy refresh still can)
[[tag_policies]]
repository = "my-proj/ci"                  # a prefix of PROJECT/REPO/IMAGE, whole segments
tag = "latest"
ttl = "30s"
""",
    "vulnerability_gate.repositories": """\
[vulnerability_gate.repositories."my-proj/legacy/"]
block_severity = "HIGH"
allow = ["CVE-2024-3094"]
""",
}
_SIZES = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))
_DURATIONS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def _size(number: int) -> str:
    unit = next(((u, n) for u, n in _SIZES if number and number % n == 0), ("", 1))
    return f"{number // unit[1]}{unit[0]}"


def _duration(seconds: float) -> str:
    unit = next(((u, n) for u, n in _DURATIONS if seconds and seconds % n == 0), ("s", 1.0))
    return f"{seconds / unit[1]:g}{unit[0]}"


_TEXT: dict[Callable[[Any], Any], Callable[[Any], str]] = {
    parse_size: _size,
    parse_duration: _duration,
    parse_listen: lambda listen: f"{listen[0]}:{listen[1]}",
}


def render_value(parse: Callable[[Any], Any], value: Any) -> str:
    """A default as TOML that parses back to it."""
    if parse in _TEXT:
        return json.dumps(_TEXT[parse](value))
    if value is None:
        return '""'  # unset: the optional parsers read "" as None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return json.dumps([str(item) for item in value])
    return json.dumps(str(value) if isinstance(value, Path) else value)


def _comment(text: str, first: str = "# ", rest: str = "#   ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest)


def _key_lines(spec: Spec) -> list[str]:
    names = spec.env[0] + (f" (or {', '.join(spec.env[1:])})" if spec.env[1:] else "")
    options = f" [{' | '.join(spec.parse.options)}]" if isinstance(spec.parse, Choice) else ""
    lines = _comment(f"{names}{options}: {spec.doc}")
    if spec.key in EXAMPLES:
        example = textwrap.indent(EXAMPLES[spec.key], "# ", lambda line: True)
        return [*lines, f"#   e.g. {spelling(spec.key)}:", *example.splitlines()]
    if spec.key in DERIVED:
        return [*lines, f"# {spec.name} = {json.dumps(DERIVED[spec.key])}"]
    return [*lines, f"{spec.name} = {render_value(spec.parse, spec.default)}"]


def render() -> str:
    """The whole example file."""
    lines = HEADER.splitlines()
    for group, kind in GROUPS.items():
        lines += ["", *_comment(inspect.cleandoc(kind.__doc__ or ""), rest="# ")]
        lines.append(f"[{group}]")
        specs = [spec for spec in SPECS.values() if spec.group == group]
        # Keys first, then the tables TOML would otherwise read them into.
        for spec in sorted(specs, key=lambda spec: spec.key in EXAMPLES):
            lines += _key_lines(spec)
    return "\n".join(lines) + "\n"
