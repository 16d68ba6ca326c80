"""Per-identity rights: which repository prefixes an identity may pull and push, and
whether it may use the admin paths. Read from a TOML file::

    [identities.ci]
    pull = ["*"]                      # every repository
    push = ["my-proj/builds"]         # my-proj/builds and everything under it

    [identities.alice]
    pull = ["my-proj"]
    push = ["my-proj/team-a/web"]
    admin = true                      # /_gar-proxy/* and gc-like operations

    [identities."*"]                  # any other authenticated identity
    pull = ["my-proj/public"]

    [identities.anonymous]            # clients without credentials (access.anonymous)
    pull = ["my-proj/public"]

A prefix matches whole path segments of the repository as upstream knows it, after
every rewrite the proxy makes (a mirror's GAR repository, the default project), with a
``LOCATION-docker.pkg.dev/`` host dropped from both, so ``my-proj/team`` does not match
``my-proj/team-b`` and a Docker Hub image pulled through a mirror onto
``my-proj/hub`` is ``my-proj/hub/library/alpine`` whatever the client called it. An
identity with no entry and no ``"*"`` entry may do nothing. Without a rules file every
identity may pull and push everything and none is admin.

>>> rules = Rules.parse({"identities": {"ci": {"pull": ["p/r"], "push": ["p/r/app"]}}})
>>> rules.allows("ci", "pull", "p/r/app"), rules.allows("ci", "push", "p/r/lib")
(True, False)
>>> rules.allows("ci", "pull", "p/rx/app"), rules.allows("bob", "pull", "p/r/app")
(False, False)
>>> rules.allows("ci", "pull", "europe-docker.pkg.dev/p/r/app")
True
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.oci.names import location_of_host

ANYONE = "*"
ANONYMOUS = "anonymous"
ACTIONS = ("pull", "push")


class RulesError(ValueError):
    """The rules file cannot be used; one line naming where."""


@dataclass(frozen=True)
class Grant:
    pull: tuple[str, ...] = ()
    push: tuple[str, ...] = ()
    admin: bool = False

    def prefixes(self, action: str) -> tuple[str, ...]:
        return self.pull if action == "pull" else self.push


EVERYTHING = Grant(pull=(ANYONE,), push=(ANYONE,))
NOTHING = Grant()


def rule_path(repository: str) -> str:
    """The path rules are matched on: without a leading GAR host (a tier passes names
    on whole, ``us-docker.pkg.dev/p/r/i``; the upper tier reads ``p/r/i`` there)."""
    host, sep, rest = repository.partition("/")
    return rest if sep and location_of_host(host) is not None else repository


def _matches(prefix: str, path: str) -> bool:
    """Whole segments: ``p/team`` matches ``p/team`` and ``p/team/x``, not ``p/team-b``
    (both normalised by ``rule_path``: the prefix at load, the path once per check)."""
    return prefix == ANYONE or path == prefix or path.startswith(prefix + "/")


def _prefixes(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RulesError(f"{where}: expected a list of repository prefixes")
    return tuple(v if v == ANYONE else rule_path(v.strip("/")) for v in value)


def _grant(where: str, table: Any) -> Grant:
    if not isinstance(table, dict):
        raise RulesError(f"{where}: expected a table")
    unknown = set(table) - {"pull", "push", "admin"}
    if unknown:
        raise RulesError(f"{where}: unknown key {sorted(unknown)[0]!r} (pull, push, admin)")
    admin = table.get("admin", False)
    if not isinstance(admin, bool):
        raise RulesError(f"{where}.admin: expected true or false")
    pull = _prefixes(f"{where}.pull", table.get("pull", []))
    push = _prefixes(f"{where}.push", table.get("push", []))
    return Grant(pull=pull, push=push, admin=admin)


@dataclass(frozen=True)
class Rules:
    grants: Mapping[str, Grant] | None  # None: no rules file

    @classmethod
    def parse(cls, document: Mapping[str, Any], where: str = "rules") -> Rules:
        unknown = set(document) - {"identities"}
        if unknown:
            raise RulesError(f"{where}: unknown table {sorted(unknown)[0]!r} (identities)")
        identities = document.get("identities", {})
        if not isinstance(identities, dict):
            raise RulesError(f"{where}: identities: expected a table")
        grants = {
            name: _grant(f"{where}: identities.{name}", table) for name, table in identities.items()
        }
        return cls(grants)

    @classmethod
    def load(cls, path: Path | None) -> Rules:
        if path is None:
            return cls(None)
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise RulesError(f"{path}: {error}") from None
        return cls.parse(document, str(path))

    def grant(self, identity: str) -> Grant:
        if self.grants is None:
            return EVERYTHING
        if identity == ANONYMOUS:  # "*" is for authenticated identities only
            return self.grants.get(ANONYMOUS, NOTHING)
        return self.grants.get(identity) or self.grants.get(ANYONE) or NOTHING

    def allows(self, identity: str, action: str, repository: str) -> bool:
        prefixes = self.grant(identity).prefixes(action)
        path = rule_path(repository)
        return any(_matches(prefix, path) for prefix in prefixes)

    def allows_everything(self, identity: str, action: str) -> bool:
        """Whether ``identity`` may ``action`` any repository at all (``"*"``, or no
        rules file): what a request that names no repository (a mount without
        ``from``, which a registry may answer from any repository) needs."""
        return ANYONE in self.grant(identity).prefixes(action)

    def is_admin(self, identity: str) -> bool:
        return self.grant(identity).admin
