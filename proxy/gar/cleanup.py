"""Cleanup-policy preview: what a repository's ``cleanupPolicies`` would delete, and why.

A repository resource carries ``cleanupPolicies``, a map from policy id to
``{"id", "action": "DELETE"|"KEEP", "condition": {...}}`` or, for a keep policy,
``{"id", "action": "KEEP", "mostRecentVersions": {"packageNamePrefixes", "keepCount"}}``.
The semantics follow what GAR does (docs/GAR.md R7, R8, each with its source):

- every field set in a condition must match (``tagPrefixes``, ``versionNamePrefixes``
  and ``packageNamePrefixes`` each match on any prefix);
- ``tagState`` ``TAGGED`` / ``UNTAGGED`` / ``ANY``; **with ``ANY``, GAR ignores
  ``tagPrefixes``** (a policy "delete ANY with prefix nightly" deletes every version
  old enough, tagged or not), and the preview says so in its notes; an unset
  ``tagState`` is previewed as ``ANY`` (noted too: GAR's behaviour is unknown);
- ages (``olderThan``, ``newerThan``) count from the version's upload time;
- a version matched by any KEEP policy is kept even when a DELETE policy matches it;
- ``mostRecentVersions`` keeps the newest ``keepCount`` versions of each package;
- a version that no DELETE policy matches is kept (keep policies alone delete nothing);
- ``cleanupPolicyDryRun`` is left out of the repository when false; the preview
  reports it (``dry_run``): when true, GAR only logs what it would delete.

This is a preview only: nothing here deletes anything.

>>> from datetime import UTC, datetime
>>> now, then = datetime(2026, 1, 31, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
>>> policies = parse_policies({
...     "old": {"id": "old", "action": "DELETE", "condition": {"olderThan": "2592000s"}},
...     "prod": {"id": "prod", "action": "KEEP",
...              "condition": {"tagState": "TAGGED", "tagPrefixes": ["prod"]}}})
>>> v1 = Version("app", "sha256:" + "1" * 64, ("prod-1",), then)
>>> v2 = Version("app", "sha256:" + "2" * 64, (), then)
>>> [(v.action, v.decided_by) for v in evaluate(policies, [v1, v2], now)]
[('keep', 'prod'), ('delete', 'old')]
>>> parse_duration("2592000s") == parse_duration("30d"), parse_duration("1.5s").total_seconds()
(True, 1.5)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from proxy.gar.jsonapi import JsonGetter, NotFound, pages

NO_POLICY = "no policy matched"

TagState = Literal["TAGGED", "UNTAGGED", "ANY"]
_TAG_STATES = {"TAGGED", "UNTAGGED", "ANY", "TAG_STATE_UNSPECIFIED"}
# The REST API answers durations as protobuf JSON ("2592000s"); policy files given to
# gcloud may say "30d", so both are read.
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# RFC 3339 with up to nanoseconds; Python's fromisoformat takes at most microseconds.
_FRACTION = re.compile(r"(\.\d{6})\d+")


class CleanupPolicyError(Exception):
    """A policy the preview cannot read (names the policy id and the field)."""


class RepositoryNotFound(Exception):
    """The repository named for a preview does not exist (the API answered 404)."""


@dataclass(frozen=True, slots=True)
class Condition:
    tag_state: TagState = "ANY"
    tag_state_given: bool = True  # False: the policy left tagState out
    tag_prefixes: tuple[str, ...] = ()
    version_name_prefixes: tuple[str, ...] = ()
    package_name_prefixes: tuple[str, ...] = ()
    older_than: timedelta | None = None
    newer_than: timedelta | None = None


@dataclass(frozen=True, slots=True)
class MostRecent:
    keep_count: int
    package_name_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    action: Literal["DELETE", "KEEP"]
    condition: Condition | None = None
    most_recent: MostRecent | None = None


@dataclass(frozen=True, slots=True)
class Version:
    """One image version: its package (image name), digest, tags and times."""

    package: str
    digest: str
    tags: tuple[str, ...]
    uploaded: datetime
    updated: datetime | None = None
    uri: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    version: Version
    action: Literal["delete", "keep"]
    decided_by: str  # a policy id, or NO_POLICY


def parse_duration(text: str) -> timedelta:
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise CleanupPolicyError(f"unreadable duration {text!r} (expected e.g. '2592000s')")
    return timedelta(seconds=float(found.group(1)) * _UNIT[found.group(2)])


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as GAR writes it (``Z``, up to nanoseconds)."""
    return datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))


def _prefixes(body: Mapping[str, Any], key: str) -> tuple[str, ...]:
    return tuple(str(p) for p in body.get(key) or ())


def _condition(pid: str, body: Mapping[str, Any]) -> Condition:
    state = str(body.get("tagState") or "ANY")
    if state not in _TAG_STATES:
        raise CleanupPolicyError(f"policy {pid!r}: unknown tagState {state!r}")
    older, newer = body.get("olderThan"), body.get("newerThan")
    return Condition(
        tag_state="ANY" if state == "TAG_STATE_UNSPECIFIED" else state,  # type: ignore[arg-type]
        tag_state_given=state not in ("ANY", "TAG_STATE_UNSPECIFIED") or "tagState" in body,
        tag_prefixes=_prefixes(body, "tagPrefixes"),
        version_name_prefixes=_prefixes(body, "versionNamePrefixes"),
        package_name_prefixes=_prefixes(body, "packageNamePrefixes"),
        older_than=parse_duration(older) if older else None,
        newer_than=parse_duration(newer) if newer else None,
    )


def parse_policy(pid: str, body: Mapping[str, Any]) -> Policy:
    action = body.get("action")
    if action not in ("DELETE", "KEEP"):
        raise CleanupPolicyError(f"policy {pid!r}: action must be DELETE or KEEP, not {action!r}")
    recent = body.get("mostRecentVersions")
    if recent is not None:
        if action != "KEEP":
            raise CleanupPolicyError(f"policy {pid!r}: mostRecentVersions needs action KEEP")
        count = int(recent.get("keepCount") or 0)
        return Policy(
            pid, "KEEP", most_recent=MostRecent(count, _prefixes(recent, "packageNamePrefixes"))
        )
    return Policy(pid, action, condition=_condition(pid, body.get("condition") or {}))


def parse_policies(cleanup_policies: Mapping[str, Any] | None) -> list[Policy]:
    """The ``cleanupPolicies`` map of a repository resource, in the order given."""
    return [
        parse_policy(str(body.get("id") or key), body)
        for key, body in (cleanup_policies or {}).items()
    ]


def _any_prefix(values: Iterable[str], prefixes: Sequence[str]) -> bool:
    return any(v.startswith(p) for v in values for p in prefixes)


def matches(condition: Condition, version: Version, now: datetime) -> bool:
    if condition.tag_state == "TAGGED" and not version.tags:
        return False
    if condition.tag_state == "UNTAGGED" and version.tags:
        return False
    # GAR ignores tagPrefixes under tagState ANY (docs/GAR.md R8).
    prefixes = condition.tag_prefixes if condition.tag_state != "ANY" else ()
    if prefixes and not _any_prefix(version.tags, prefixes):
        return False
    if condition.version_name_prefixes and not _any_prefix(
        [version.digest], condition.version_name_prefixes
    ):
        return False
    if condition.package_name_prefixes and not _any_prefix(
        [version.package], condition.package_name_prefixes
    ):
        return False
    age = now - version.uploaded
    if condition.older_than is not None and not age > condition.older_than:
        return False
    return condition.newer_than is None or age < condition.newer_than


def _kept_as_recent(policies: Sequence[Policy], versions: Sequence[Version]) -> dict[int, str]:
    """Index of each version a mostRecentVersions policy keeps -> that policy's id."""
    kept: dict[int, str] = {}
    for policy in policies:
        rule = policy.most_recent
        if rule is None:
            continue
        by_package: dict[str, list[int]] = {}
        for index, version in enumerate(versions):
            if not rule.package_name_prefixes or _any_prefix(
                [version.package], rule.package_name_prefixes
            ):
                by_package.setdefault(version.package, []).append(index)
        for indices in by_package.values():
            indices.sort(key=lambda i: (versions[i].uploaded, versions[i].digest), reverse=True)
            for index in indices[: rule.keep_count]:
                kept.setdefault(index, policy.id)
    return kept


def _decide(
    policies: Sequence[Policy], version: Version, now: datetime, recent: str | None
) -> Verdict:
    for policy in policies:
        if policy.action == "KEEP" and policy.condition and matches(policy.condition, version, now):
            return Verdict(version, "keep", policy.id)
    if recent is not None:
        return Verdict(version, "keep", recent)
    for policy in policies:
        if (
            policy.action == "DELETE"
            and policy.condition
            and matches(policy.condition, version, now)
        ):
            return Verdict(version, "delete", policy.id)
    return Verdict(version, "keep", NO_POLICY)


def notes(policies: Sequence[Policy]) -> list[str]:
    """What a reader of the policies may not expect GAR to do with them."""
    said: list[str] = []
    for policy in policies:
        condition = policy.condition
        if condition is None or not condition.tag_prefixes or condition.tag_state != "ANY":
            continue
        prefixes = ", ".join(condition.tag_prefixes)
        if condition.tag_state_given:
            said.append(
                f"policy {policy.id!r}: tagState ANY, so GAR ignores its tagPrefixes "
                f"({prefixes}); set tagState TAGGED to delete or keep by tag"
            )
        else:
            said.append(
                f"policy {policy.id!r} sets tagPrefixes ({prefixes}) but no tagState: "
                "previewed as ANY, under which GAR ignores them; set tagState TAGGED"
            )
    return said


def evaluate(
    policies: Sequence[Policy], versions: Sequence[Version], now: datetime
) -> list[Verdict]:
    """One verdict per version, in the order of ``versions``."""
    recent = _kept_as_recent(policies, versions)
    return [_decide(policies, v, now, recent.get(i)) for i, v in enumerate(versions)]


def version_of_image(image: Mapping[str, Any]) -> Version:
    """A ``dockerImages`` resource as a version; the package is the image name.

    >>> version_of_image({"uri": "europe-west1-docker.pkg.dev/p/r/team/app@sha256:" + "a" * 64,
    ...     "tags": ["v1"], "uploadTime": "2026-01-02T03:04:05.123456789Z"}).package
    'team/app'
    """
    uri = str(image["uri"])
    path, _, digest = uri.partition("@")
    # LOCATION-docker.pkg.dev/PROJECT/REPO/NAME: the package is what follows the repo.
    package = path.split("/", 3)[3] if path.count("/") >= 3 else path
    updated = image.get("updateTime")
    return Version(
        package=package,
        digest=digest,
        tags=tuple(str(t) for t in image.get("tags") or ()),
        uploaded=parse_time(str(image["uploadTime"])),
        updated=parse_time(str(updated)) if updated else None,
        uri=uri,
    )


async def list_versions(
    api: JsonGetter, base_url: str, project: str, location: str, repo: str, page_size: int = 1000
) -> list[Version]:
    """Every image version of a repository, following ``nextPageToken`` to the end."""
    name = f"projects/{project}/locations/{location}/repositories/{repo}"
    url = f"{base_url.rstrip('/')}/v1/{name}/dockerImages"
    versions: list[Version] = []
    try:
        async for images in pages(api, url, {"pageSize": str(page_size)}, "dockerImages"):
            versions += [version_of_image(image) for image in images]
    except NotFound:
        raise RepositoryNotFound(name) from None
    return versions


@dataclass(frozen=True, slots=True)
class Preview:
    verdicts: list[Verdict]
    dry_run: bool  # cleanupPolicyDryRun: GAR only logs what it would delete
    notes: list[str]


async def preview(
    api: JsonGetter, base_url: str, project: str, location: str, repo: str, now: datetime
) -> Preview:
    """Read the repository's policies and images and say what would be deleted."""
    name = f"projects/{project}/locations/{location}/repositories/{repo}"
    repository = await api.get_json(f"{base_url.rstrip('/')}/v1/{name}")
    if repository is None:
        raise RepositoryNotFound(name)
    policies = parse_policies(repository.get("cleanupPolicies"))
    versions = await list_versions(api, base_url, project, location, repo)
    dry_run = repository.get("cleanupPolicyDryRun") is True  # left out when false (R7)
    return Preview(evaluate(policies, versions, now), dry_run, notes(policies))
