"""The vulnerability gate's decisions and their cache, on a stepped clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.gar.policy import (
    DecisionCache,
    GatePolicy,
    GatePolicyError,
    decide,
    timed_out,
)
from proxy.gar.vulnerabilities import Finding, Report, ScanStatus, build_report

FINISHED = ScanStatus("finished")
IMAGE = "us-docker.pkg.dev/proj/web/app@sha256:" + "f" * 64


def finding(cve: str, severity: str, package: str = "openssl", score: float = 5.0) -> Finding:
    return Finding(cve, severity, package, "1.0", "1.1", score)


def report(*findings: Finding) -> Report:
    occurrences: list[dict[str, Any]] = []
    for f in findings:
        occurrences.append(
            {
                "noteName": f"projects/goog-vulnz/notes/{f.cve}",
                "vulnerability": {
                    "effectiveSeverity": f.severity,
                    "cvssScore": f.cvss_score,
                    "packageIssue": [
                        {
                            "affectedPackage": f.package,
                            "affectedVersion": {"name": "1.0"},
                            "fixedVersion": {"name": "1.1"},
                        }
                    ],
                },
            }
        )
    return build_report(IMAGE, occurrences)


def policy(**body: Any) -> GatePolicy:
    return GatePolicy.from_mapping(body)


def test_a_finding_at_the_threshold_denies_naming_the_cve_and_the_allow_list() -> None:
    got = decide(
        policy(block_severity="HIGH"),
        "proj/web/app",
        FINISHED,
        report(finding("CVE-2024-0001", "CRITICAL", "glibc", 9.8), finding("CVE-2024-0002", "LOW")),
        IMAGE,
    )
    assert got.verdict == "deny"
    assert [f.cve for f in got.blocking] == ["CVE-2024-0001"]
    assert got.message.startswith(IMAGE + " is blocked by the vulnerability gate")
    assert "CVE-2024-0001 (CRITICAL, glibc 1.0, fixed in 1.1)" in got.message
    assert "CVE-2024-0002" not in got.message
    assert got.message.endswith("add CVE-2024-0001 to vulnerability_gate.allow")


def test_findings_below_the_threshold_pass() -> None:
    got = decide(
        policy(block_severity="CRITICAL"),
        "proj/web/app",
        FINISHED,
        report(finding("CVE-1", "HIGH")),
    )
    assert got.allowed and got.final


def test_an_allow_listed_cve_passes_and_the_others_still_block() -> None:
    findings = report(finding("CVE-2024-0001", "CRITICAL"), finding("CVE-2024-0002", "HIGH"))
    assert decide(
        policy(block_severity="HIGH", allow=["cve-2024-0001", "CVE-2024-0002"]),
        "r",
        FINISHED,
        findings,
    ).allowed
    got = decide(policy(block_severity="HIGH", allow=["CVE-2024-0001"]), "r", FINISHED, findings)
    assert got.verdict == "deny"
    assert [f.cve for f in got.blocking] == ["CVE-2024-0002"]


def test_the_message_names_the_three_worst_and_counts_the_rest() -> None:
    findings = report(
        *(finding(f"CVE-2024-000{i}", "CRITICAL", score=float(i)) for i in range(1, 6))
    )
    got = decide(policy(block_severity="CRITICAL"), "r", FINISHED, findings)
    assert "5 vulnerabilities at or above CRITICAL" in got.message
    assert "and 2 more" in got.message
    assert (
        "add CVE-2024-0005, CVE-2024-0004, CVE-2024-0003 ... to vulnerability_gate.allow"
        in got.message
    )
    assert "CVE-2024-0001" not in got.message


def test_a_cve_in_several_packages_is_named_once() -> None:
    findings = report(finding("CVE-9", "HIGH", "libssl3"), finding("CVE-9", "HIGH", "openssl"))
    got = decide(policy(block_severity="HIGH"), "r", FINISHED, findings)
    assert "1 vulnerability at or above HIGH" in got.message and got.message.count("CVE-9 (") == 1
    assert len(got.blocking) == 2


def test_the_longest_repository_prefix_overrides_and_adds_to_the_allow_list() -> None:
    gate = policy(
        block_severity="HIGH",
        allow=["CVE-G"],
        repositories={
            "proj/": {"block_severity": "CRITICAL"},
            "proj/legacy/": {"block_severity": "MEDIUM", "allow": ["CVE-L"]},
        },
    )
    findings = report(
        finding("CVE-G", "CRITICAL"), finding("CVE-L", "CRITICAL"), finding("CVE-M", "MEDIUM")
    )
    legacy = decide(gate, "proj/legacy/app", FINISHED, findings)
    assert [f.cve for f in legacy.blocking] == ["CVE-M"]
    assert legacy.message.endswith("to vulnerability_gate.repositories.proj/legacy/.allow")
    other = decide(gate, "proj/web/app", FINISHED, findings)
    assert [f.cve for f in other.blocking] == ["CVE-L"]
    assert decide(gate, "elsewhere/app", FINISHED, findings).blocking[0].cve == "CVE-L"
    assert gate.rule_for("elsewhere/app").block_severity == "HIGH"


def test_no_threshold_never_blocks() -> None:
    assert decide(
        policy(block_severity=None), "r", FINISHED, report(finding("CVE-1", "CRITICAL"))
    ).allowed


@pytest.mark.parametrize(
    ("unscanned", "state", "verdict"),
    [
        ("allow", "not_scanned", "allow"),
        ("allow", "failed", "allow"),
        ("deny", "scanning", "deny"),
        ("deny", "not_scanned", "deny"),
        ("wait", "not_scanned", "wait"),
        ("wait", "pending", "wait"),
        ("wait", "scanning", "wait"),
        ("wait", "failed", "deny"),  # waiting cannot help
        ("wait", "unsupported", "deny"),
    ],
)
def test_unscanned_images_follow_the_setting(unscanned: str, state: str, verdict: str) -> None:
    gate = policy(unscanned=unscanned, wait_seconds=90)
    got = decide(gate, "r", ScanStatus(state, "boom" if state == "failed" else None), None, IMAGE)  # type: ignore[arg-type]
    assert got.verdict == verdict
    assert not got.final
    assert f"({state})" in got.message
    assert got.wait_seconds == (90 if verdict == "wait" else 0)


def test_a_wait_that_runs_out_denies() -> None:
    got = timed_out(policy(unscanned="wait", wait_seconds=45), "r", IMAGE)
    assert got.verdict == "deny"
    assert "not scanned within 45 s" in got.message


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"block_severity": "SEVERE"}, "vulnerability_gate.block_severity"),
        ({"unscanned": "maybe"}, "vulnerability_gate.unscanned"),
        ({"unscanned": "wait"}, "vulnerability_gate.wait_seconds"),
        (
            {"repositories": {"p/": {"unscanned": "block"}}},
            "vulnerability_gate.repositories.p/.unscanned",
        ),
    ],
)
def test_bad_settings_name_their_key(body: dict[str, Any], key: str) -> None:
    with pytest.raises(GatePolicyError, match=key.replace(".", r"\.")):
        GatePolicy.from_mapping(body)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_decisions_live_for_the_ttl() -> None:
    clock = Clock()
    cache = DecisionCache(ttl=300, clock=clock, unscanned_ttl=20)
    final = decide(policy(), "r", FINISHED, report())
    unscanned = decide(policy(), "r", ScanStatus("scanning"), None)
    cache.put("r", "sha256:a", final)
    cache.put("r", "sha256:b", unscanned)
    cache.put(
        "r",
        "sha256:c",
        decide(policy(unscanned="wait", wait_seconds=5), "r", ScanStatus("scanning"), None),
    )
    clock.now = 19.9
    assert cache.get("r", "sha256:a") is final and cache.get("r", "sha256:b") is unscanned
    assert cache.get("r", "sha256:c") is None  # a wait is never cached
    assert cache.get("other", "sha256:a") is None  # overrides differ per repository
    clock.now = 20.0
    assert cache.get("r", "sha256:b") is None
    clock.now = 299.9
    assert cache.get("r", "sha256:a") is final
    clock.now = 300.0
    assert cache.get("r", "sha256:a") is None


def test_the_cache_is_bounded_dropping_the_oldest() -> None:
    cache = DecisionCache(ttl=300, clock=Clock(), max_entries=2)
    allow = decide(policy(), "r", FINISHED, report())
    for digest in ("a", "b", "c"):
        cache.put("r", digest, allow)
    assert [cache.get("r", d) is not None for d in ("a", "b", "c")] == [False, True, True]


async def test_concurrent_misses_decide_once() -> None:
    cache = DecisionCache(ttl=300, clock=Clock())
    release = asyncio.Event()
    calls = 0

    async def lookup() -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        return decide(policy(), "r", FINISHED, report())

    waiters = [asyncio.create_task(cache.get_or_decide("r", "sha256:a", lookup)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    decisions = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert calls == 1
    assert all(d is decisions[0] for d in decisions)
    assert await cache.get_or_decide("r", "sha256:a", lookup) is decisions[0]
    assert calls == 1


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_cached() -> None:
    cache = DecisionCache(ttl=300, clock=Clock())
    release = asyncio.Event()

    async def broken() -> Any:
        await release.wait()
        raise RuntimeError("analysis API down")

    waiters = [asyncio.create_task(cache.get_or_decide("r", "d", broken)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.get("r", "d") is None


async def test_a_waiter_decides_itself_when_the_first_caller_is_cancelled() -> None:
    cache = DecisionCache(ttl=300, clock=Clock())
    never = asyncio.Event()
    allow = decide(policy(), "r", FINISHED, report())

    async def stuck() -> Any:
        await never.wait()

    async def quick() -> Any:
        return allow

    first = asyncio.create_task(cache.get_or_decide("r", "d", stuck))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get_or_decide("r", "d", quick))
    await asyncio.sleep(0)
    first.cancel()
    assert await asyncio.wait_for(second, 5) is allow
    assert first.cancelled()
