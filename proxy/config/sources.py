"""Where each effective setting came from, for ``gar-proxy config check``.

The same precedence as ``load_settings`` (defaults < TOML file < environment <
command line), replayed over the names only: ``default``, ``file PATH``,
``env NAME`` or ``flag``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.config.fields import ConfigError
from proxy.config.groups import SPECS
from proxy.config.loader import config_path, env_source, read_file


def sources(
    config_file: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> dict[str, str]:
    found = dict.fromkeys(SPECS, "default")
    path = config_path(config_file, env)
    if path is not None:
        try:
            written = read_file(path)
        except ConfigError:
            written = {}  # load_settings has already refused it
        found.update(dict.fromkeys(written, f"file {path}"))
    for spec in SPECS.values():
        name = env_source(spec, env)
        if name is not None:
            found[spec.key] = f"env {name}"
    found.update({k: "flag" for k, raw in overrides.items() if raw is not None and k in found})
    return found
