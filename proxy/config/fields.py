"""How a setting is declared: ``setting(default, parser, doc=...)`` is a dataclass field
that carries its parser, its documentation and the compatibility environment names it
also answers to; ``Spec`` is that declaration read back, keyed ``section.key``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "GAR_PROXY_"
CONFIG_ENV = "GAR_PROXY_CONFIG"  # the TOML file; not a setting itself


class ConfigError(Exception):
    """A setting could not be read; the message is one line naming the key."""


def setting(
    default: Any,
    parse: Callable[[Any], Any],
    *,
    doc: str,
    env: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    """A field with its declaration. The TOML key is ``<section>.<field name>``, the
    environment name ``GAR_PROXY_<SECTION>_<FIELD>``; ``env`` adds the few other names
    a setting keeps (the original design's and Google's own), ``doc`` is the line
    ``config.example.toml`` shows, ``secret`` keeps the value out of every output."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple")
    if not doc:
        raise TypeError("every setting says what it does (doc=)")
    metadata = {"parse": parse, "env": env, "secret": secret, "doc": doc}
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


def env_name(key: str) -> str:
    """The environment name of a ``section.key``.

    >>> env_name("cache.max_size")
    'GAR_PROXY_CACHE_MAX_SIZE'
    """
    return ENV_PREFIX + key.upper().replace(".", "_")


@dataclass(frozen=True)
class Spec:
    """One setting's declaration, read off its field."""

    key: str  # TOML "section.name"
    group: str
    name: str
    parse: Callable[[Any], Any]
    env: tuple[str, ...]  # GAR_PROXY_SECTION_NAME first, then the compatibility names
    secret: bool
    doc: str
    default: Any


def specs_of(group: str, kind: type[Any]) -> list[Spec]:
    found = []
    for item in dataclasses.fields(kind):
        meta, key = item.metadata, f"{group}.{item.name}"
        env = (env_name(key), *meta["env"])
        found.append(
            Spec(
                key, group, item.name, meta["parse"], env, meta["secret"], meta["doc"], item.default
            )
        )
    return found
