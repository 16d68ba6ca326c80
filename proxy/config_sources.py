"""Where each effective setting came from, for ``gar-proxy config check``.

The same precedence as ``load_settings`` (defaults < TOML file < environment <
command line), replayed over the names only: ``default``, ``file PATH``,
``env NAME`` or ``flag``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.config import CONFIG_ENV, SPECS


def sources(
    config_file: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> dict[str, str]:
    found = dict.fromkeys(SPECS, "default")
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            document = {}  # load_settings has already refused it
        for section, table in document.items():
            for name in table if isinstance(table, dict) else ():
                if f"{section}.{name}" in found:
                    found[f"{section}.{name}"] = f"file {config_file}"
    for spec in SPECS.values():
        name = next((n for n in spec.env if env.get(n, "") != ""), None)
        if name is not None:
            found[spec.key] = f"env {name}"
    for key, raw in overrides.items():
        if raw is not None and key in found:
            found[key] = "flag"
    return found
