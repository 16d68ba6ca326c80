"""Tag policies (``[[tag_policies]]``, setting ``cache.tag_policies``): how long a tag
is trusted before it is revalidated, per repository prefix and tag pattern.

An ordered list of rules; the first that matches a tag decides, and a tag no rule
matches keeps ``cache.tag_ttl``. A rule names a ``repository`` prefix (whole path
segments of the repository as upstream knows it, ``PROJECT/REPO/IMAGE``, so
``proj/app`` does not match ``proj/app-b``) and/or a ``tag`` regex (the whole tag must
match), and either a ``ttl`` or ``immutable = true`` (never revalidated)::

    >>> rules = parse_tag_policies([
    ...     {"tag": r"v?\\d+\\.\\d+\\.\\d+", "immutable": True},
    ...     {"repository": "proj/ci", "tag": "latest", "ttl": "30s"},
    ... ])
    >>> policy = TagPolicies(rules, default_ttl=60.0)
    >>> policy.ttl("proj/app/web", "v1.2.3"), policy.ttl("proj/ci/runner", "latest")
    (None, 30.0)
    >>> policy.ttl("proj/ci/runner", "latest-dev"), policy.ttl("proj/cix/runner", "latest")
    (60.0, 60.0)

Parsing is pure and stops start-up with one line naming the rule and what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from proxy.config.values import parse_bool, parse_duration

KEYS = ("repository", "tag", "ttl", "immutable")


@dataclass(frozen=True)
class TagRule:
    """One rule: ``ttl`` None means immutable."""

    repository: str = ""  # a path prefix; "" matches every repository
    tag: str = ""  # a regex the whole tag must match; "" matches every tag
    ttl: float | None = None
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.tag and self.pattern is None:
            object.__setattr__(self, "pattern", re.compile(self.tag))

    def matches(self, path: str, tag: str) -> bool:
        prefix = self.repository
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return False
        return self.pattern is None or self.pattern.fullmatch(tag) is not None

    def __str__(self) -> str:
        where = " ".join(
            part
            for part in (
                f"repository {self.repository}" if self.repository else "",
                f"tag /{self.tag}/" if self.tag else "",
            )
            if part
        )
        then = "immutable" if self.ttl is None else f"ttl {self.ttl:g}s"
        return f"{where or 'every tag'}: {then}"


def _rule(number: int, table: Any) -> TagRule:
    where = f"rule {number}"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table with repository/tag and ttl or immutable")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(KEYS)})")
    repository = str(table.get("repository", "")).strip().strip("/")
    if repository and any(part in ("", ".", "..") for part in repository.split("/")):
        raise ValueError(f"{where}: repository {repository!r} needs non-empty path segments")
    tag = str(table.get("tag", ""))
    try:
        re.compile(tag)
    except re.error as error:
        raise ValueError(f"{where}: tag {tag!r} is not a regex ({error})") from None
    immutable = "immutable" in table and _field(where, "immutable", parse_bool, table)
    if ("ttl" in table) == immutable:
        raise ValueError(f"{where}: give either ttl or immutable = true")
    if immutable:
        return TagRule(repository, tag, None)
    ttl = _field(where, "ttl", parse_duration, table)
    if ttl < 0:
        raise ValueError(f"{where}: ttl must not be negative")
    return TagRule(repository, tag, ttl)


def _field(where: str, key: str, parse: Any, table: dict[str, Any]) -> Any:
    try:
        return parse(table[key])
    except ValueError as error:
        raise ValueError(f"{where}: {key}: {error}") from None


def parse_tag_policies(value: Any) -> tuple[TagRule, ...]:
    """TOML ``[[tag_policies]]`` tables, or a JSON list of them (environment)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as error:
            raise ValueError(f"expected a JSON list of tables ({error})") from None
    if not isinstance(value, list):
        raise ValueError("expected a list of tables ([[tag_policies]])")
    return tuple(_rule(number, table) for number, table in enumerate(value, 1))


class TagPolicies:
    """The rules in order, over ``cache.tag_ttl`` for tags none matches."""

    def __init__(self, rules: tuple[TagRule, ...], default_ttl: float) -> None:
        self.rules = rules
        self.default_ttl = default_ttl

    def ttl(self, path: str, tag: str) -> float | None:
        """Seconds the tag is trusted; None: immutable, never revalidated."""
        for rule in self.rules:
            if rule.matches(path, tag):
                return rule.ttl
        return self.default_ttl
