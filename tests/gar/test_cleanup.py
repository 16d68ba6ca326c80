"""Cleanup-policy preview: GAR's semantics over one fixed set of versions.

Each golden case names where the behaviour it holds is documented (docs/GAR.md R7, R8).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxy.gar.cleanup import (
    NO_POLICY,
    CleanupPolicyError,
    RepositoryNotFound,
    Version,
    evaluate,
    list_versions,
    notes,
    parse_policies,
    preview,
)

OVERVIEW = "https://cloud.google.com/artifact-registry/docs/repositories/cleanup-policy-overview"
CONDITION = (
    "https://cloud.google.com/python/docs/reference/artifactregistry/latest/"
    "google.cloud.artifactregistry_v1.types.CleanupPolicyCondition"
)
ANY_IGNORES_PREFIXES = "https://stackoverflow.com/questions/78702774"

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _version(name: str, package: str, tags: tuple[str, ...], days_old: int) -> Version:
    return Version(package, "sha256:" + name * 32, tags, NOW - timedelta(days=days_old))


VERSIONS = {
    "a1": _version("a1", "app", ("v1",), 100),
    "a2": _version("a2", "app", (), 60),
    "a3": _version("a3", "app", ("prod-1",), 40),
    "a4": _version("a4", "app", ("latest",), 1),
    "b1": _version("b1", "team/base", (), 200),
    "b2": _version("b2", "team/base", ("dev-3",), 10),
}


def days(n: int) -> str:
    return f"{n * 86400}s"


def delete(pid: str, **condition: Any) -> dict[str, Any]:
    return {pid: {"id": pid, "action": "DELETE", "condition": condition}}


def keep(pid: str, **condition: Any) -> dict[str, Any]:
    return {pid: {"id": pid, "action": "KEEP", "condition": condition}}


def recent(pid: str, count: int, *prefixes: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"keepCount": count}
    if prefixes:
        rule["packageNamePrefixes"] = list(prefixes)
    return {pid: {"id": pid, "action": "KEEP", "mostRecentVersions": rule}}


# (name, policies, versions deleted, where GAR's behaviour is documented)
CASES: list[tuple[str, dict[str, Any], set[str], str]] = [
    ("no policies delete nothing", {}, set(), OVERVIEW),
    ("older than 30 days", delete("old", olderThan=days(30)), {"a1", "a2", "a3", "b1"}, CONDITION),
    ("untagged", delete("u", tagState="UNTAGGED"), {"a2", "b1"}, CONDITION),
    ("tagged", delete("t", tagState="TAGGED"), {"a1", "a3", "a4", "b2"}, CONDITION),
    ("any tag state, empty condition", delete("all", tagState="ANY"), set(VERSIONS), CONDITION),
    (
        "keep by tag prefix wins over an age delete",
        {
            **delete("old", olderThan=days(30)),
            **keep("prod", tagState="TAGGED", tagPrefixes=["prod"]),
        },
        {"a1", "a2", "b1"},
        OVERVIEW,
    ),
    (
        "tag prefixes match any prefix",
        delete("t", tagState="TAGGED", tagPrefixes=["dev", "v"]),
        {"a1", "b2"},
        CONDITION,
    ),
    ("package name prefix", delete("team", packageNamePrefixes=["team/"]), {"b1", "b2"}, CONDITION),
    ("newer than 30 days", delete("new", newerThan=days(30)), {"a4", "b2"}, CONDITION),
    (
        "older and newer in one condition make a window",
        delete("window", olderThan=days(30), newerThan=days(90)),
        {"a2", "a3"},
        CONDITION,
    ),
    (
        "keep the 2 most recent of every package",
        {**delete("all", tagState="ANY"), **recent("two", 2)},
        {"a1", "a2"},
        OVERVIEW,
    ),
    (
        "keep most recent counts only the packages it names",
        {**delete("all", tagState="ANY"), **recent("one-app", 1, "app")},
        {"a1", "a2", "a3", "b1", "b2"},
        OVERVIEW,
    ),
    (
        "version name (digest) prefixes",
        delete("digests", versionNamePrefixes=["sha256:a1", "sha256:b1"]),
        {"a1", "b1"},
        CONDITION,
    ),
    (
        "two deletes delete the union",
        {**delete("u", tagState="UNTAGGED"), **delete("ancient", olderThan=days(150))},
        {"a2", "b1"},
        OVERVIEW,
    ),
    (
        "keep every tagged version against an age delete",
        {**delete("old", olderThan=days(30)), **keep("tagged", tagState="TAGGED")},
        {"a2", "b1"},
        OVERVIEW,
    ),
    (
        "keep policies alone delete nothing",
        {**keep("prod", tagPrefixes=["prod"]), **recent("r", 1)},
        set(),
        OVERVIEW,
    ),
    (
        "every field of a condition must match",
        delete("narrow", olderThan=days(30), packageNamePrefixes=["app"], tagState="UNTAGGED"),
        {"a2"},
        CONDITION,
    ),
    (
        # The StackOverflow case: "delete ANY with prefix nightly, older than 12 h" also
        # flagged v0.12.3; the fix was tagState TAGGED.
        "tagState ANY ignores tagPrefixes",
        delete("nightly", tagState="ANY", tagPrefixes=["dev"], olderThan=days(5)),
        {"a1", "a2", "a3", "b1", "b2"},
        ANY_IGNORES_PREFIXES,
    ),
    (
        "tagState TAGGED uses tagPrefixes",
        delete("nightly", tagState="TAGGED", tagPrefixes=["dev"], olderThan=days(5)),
        {"b2"},
        ANY_IGNORES_PREFIXES,
    ),
    (
        "a keep under tagState ANY keeps everything its other fields match",
        {**delete("old", olderThan=days(30)), **keep("prod", tagState="ANY", tagPrefixes=["prod"])},
        set(),
        ANY_IGNORES_PREFIXES,
    ),
]


@pytest.mark.parametrize(
    ("policies", "deleted", "source"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_golden_cases(policies: dict[str, Any], deleted: set[str], source: str) -> None:
    assert source.startswith("https://")  # every case says where GAR does this
    verdicts = evaluate(parse_policies(policies), list(VERSIONS.values()), NOW)
    names = {v.digest: k for k, v in VERSIONS.items()}
    got_deleted = {names[v.version.digest] for v in verdicts if v.action == "delete"}
    got_kept = {names[v.version.digest] for v in verdicts if v.action == "keep"}
    assert got_deleted == deleted
    assert got_kept == set(VERSIONS) - deleted


def test_ignored_tag_prefixes_are_noted() -> None:
    said = notes(
        parse_policies(
            {
                **delete("any", tagState="ANY", tagPrefixes=["nightly"]),
                **delete("unset", tagPrefixes=["dev"]),
                **delete("tagged", tagState="TAGGED", tagPrefixes=["v"]),
            }
        )
    )
    assert said == [
        "policy 'any': tagState ANY, so GAR ignores its tagPrefixes (nightly); set tagState "
        "TAGGED to delete or keep by tag",
        "policy 'unset' sets tagPrefixes (dev) but no tagState: previewed as ANY, under which "
        "GAR ignores them; set tagState TAGGED",
    ]


def test_each_verdict_names_the_policy_that_decided_it() -> None:
    policies = parse_policies(
        {
            **delete("untagged", tagState="UNTAGGED"),
            **delete("old", olderThan=days(30)),
            **keep("prod", tagState="TAGGED", tagPrefixes=["prod"]),
            **recent("newest", 1, "team/"),
        }
    )
    decided = {
        v.version.digest[7:9]: v.decided_by
        for v in evaluate(policies, list(VERSIONS.values()), NOW)
    }
    assert decided == {
        "a1": "old",
        "a2": "untagged",  # both deletes match; the first one listed decides
        "a3": "prod",
        "a4": NO_POLICY,
        "b1": "untagged",
        "b2": "newest",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"x": {"action": "ARCHIVE", "condition": {}}},
        {"x": {"action": "DELETE", "mostRecentVersions": {"keepCount": 1}}},
        {"x": {"action": "DELETE", "condition": {"olderThan": "thirty days"}}},
        {"x": {"action": "DELETE", "condition": {"tagState": "SOMETIMES"}}},
    ],
)
def test_unreadable_policies_are_refused_with_their_id(body: dict[str, Any]) -> None:
    with pytest.raises(CleanupPolicyError, match=r"'x'|thirty"):
        parse_policies(body)


def _image(name: str, digit: str, tags: list[str]) -> dict[str, Any]:
    uri = f"us-docker.pkg.dev/proj/repo/{name}@sha256:{digit * 64}"
    return {
        "name": "projects/proj/locations/us/repositories/repo/dockerImages/"
        + name.replace("/", "%2F")
        + f"@sha256:{digit * 64}",
        "uri": uri,
        "tags": tags,
        "uploadTime": "2026-05-01T00:00:00.123456789Z",
        "updateTime": "2026-05-02T00:00:00Z",
        "buildTime": "2026-04-30T23:59:00Z",
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
    }


class PagedApi:
    """Answers the dockerImages list in pages and records what was asked."""

    def __init__(self, pages: list[list[dict[str, Any]]], repository: dict[str, Any] | None = None):
        self.pages = pages
        self.repository = repository
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def get_json(
        self, url: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        self.calls.append((url, dict(params or {})))
        if not url.endswith("/dockerImages"):
            return self.repository
        index = int((params or {}).get("pageToken") or "0")
        body: dict[str, Any] = {"dockerImages": self.pages[index]}
        if index + 1 < len(self.pages):
            body["nextPageToken"] = str(index + 1)
        return body


async def test_the_image_list_is_followed_through_every_page() -> None:
    api = PagedApi(
        [[_image("app", "1", ["v1"])], [_image("team/base", "2", [])], [_image("app", "3", [])]]
    )
    versions = await list_versions(api, "https://ar.example/", "proj", "us", "repo", page_size=1)
    assert [(v.package, v.digest[7:8], v.tags) for v in versions] == [
        ("app", "1", ("v1",)),
        ("team/base", "2", ()),
        ("app", "3", ()),
    ]
    assert [c[1].get("pageToken") for c in api.calls] == [None, "1", "2"]
    assert (
        api.calls[0][0]
        == "https://ar.example/v1/projects/proj/locations/us/repositories/repo/dockerImages"
    )
    assert versions[0].uploaded == datetime(2026, 5, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert versions[0].uri == "us-docker.pkg.dev/proj/repo/app@sha256:" + "1" * 64


async def test_preview_reads_the_repository_policies_then_its_images() -> None:
    repository = {"format": "DOCKER", "cleanupPolicies": delete("untagged", tagState="UNTAGGED")}
    api = PagedApi([[_image("app", "1", ["v1"]), _image("app", "2", [])]], repository)
    found = await preview(api, "https://ar.example", "proj", "us", "repo", NOW)
    assert (found.dry_run, found.notes) == (False, [])
    assert [(v.version.digest[7:8], v.action, v.decided_by) for v in found.verdicts] == [
        ("1", "keep", NO_POLICY),
        ("2", "delete", "untagged"),
    ]


async def test_preview_of_a_missing_repository_says_so() -> None:
    with pytest.raises(RepositoryNotFound, match="repositories/repo"):
        await preview(PagedApi([[]], None), "https://ar.example", "proj", "us", "repo", NOW)


async def test_dry_run_state_is_reported() -> None:
    """``cleanupPolicyDryRun`` is left out when false (proto3 JSON, docs/GAR.md R7)."""
    policies = delete("untagged", tagState="UNTAGGED")
    states = []
    for extra in ({}, {"cleanupPolicyDryRun": True}, {"cleanupPolicyDryRun": False}):
        api = PagedApi([[_image("app", "1", [])]], {"cleanupPolicies": policies, **extra})
        states.append((await preview(api, "https://ar.example", "proj", "us", "repo", NOW)).dry_run)
    assert states == [False, True, False]
