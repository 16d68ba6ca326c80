"""The vulnerability gate's decisions: allow, deny, or wait for a scan; and their cache.

Settings (the ``vulnerability_gate`` section) name a severity at which images are
blocked, CVEs that never block, what to do with an image that has no finished scan,
and overrides per repository prefix (the longest matching prefix wins; its ``allow``
adds to the global list, its other keys replace the global ones).

>>> policy = GatePolicy.from_mapping({"block_severity": "HIGH", "allow": ["CVE-2024-1"],
...     "unscanned": "wait", "wait_seconds": 60,
...     "repositories": {"proj/legacy/": {"block_severity": "CRITICAL"}}})
>>> [policy.rule_for(repo).block_severity for repo in ("proj/legacy/app", "proj/web/app")]
['CRITICAL', 'HIGH']
>>> decide(policy, "proj/web/app", ScanStatus("scanning"), None).verdict
'wait'
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.gar.vulnerabilities import SEVERITIES, Finding, Report, ScanStatus

Unscanned = Literal["allow", "deny", "wait"]
Verdict = Literal["allow", "deny", "wait"]
_BLOCKABLE = SEVERITIES[:-1]  # SEVERITY_UNSPECIFIED is no threshold
# How many CVEs a denial names: enough to act on, short enough for a docker error line.
NAMED = 3


class GatePolicyError(Exception):
    """A ``vulnerability_gate`` setting that cannot be used; names the key."""


@dataclass(frozen=True, slots=True)
class GateRule:
    block_severity: str | None = "CRITICAL"  # None: findings never block
    allow: frozenset[str] = frozenset()  # upper-case CVE ids
    unscanned: Unscanned = "allow"
    wait_seconds: float = 0.0
    allow_key: str = "vulnerability_gate.allow"  # where the user adds CVEs for this rule


def _rule(body: Mapping[str, Any], base: GateRule, where: str, allow_key: str) -> GateRule:
    severity = body.get("block_severity", base.block_severity)
    if severity is not None and str(severity).upper() not in _BLOCKABLE:
        raise GatePolicyError(f"{where}.block_severity must be one of {', '.join(_BLOCKABLE)}")
    unscanned = str(body.get("unscanned", base.unscanned))
    if unscanned not in ("allow", "deny", "wait"):
        raise GatePolicyError(f"{where}.unscanned must be allow, deny or wait, not {unscanned!r}")
    wait = float(body.get("wait_seconds", base.wait_seconds))
    if unscanned == "wait" and wait <= 0:
        raise GatePolicyError(f"{where}.wait_seconds must be positive when unscanned is wait")
    allow = base.allow | {str(cve).strip().upper() for cve in body.get("allow") or ()}
    return GateRule(
        block_severity=None if severity is None else str(severity).upper(),
        allow=frozenset(allow),
        unscanned=unscanned,  # type: ignore[arg-type]
        wait_seconds=wait,
        allow_key=allow_key,
    )


@dataclass(frozen=True, slots=True)
class GatePolicy:
    default: GateRule = field(default_factory=GateRule)
    overrides: tuple[tuple[str, GateRule], ...] = ()  # longest prefix first

    @classmethod
    def from_mapping(cls, body: Mapping[str, Any]) -> GatePolicy:
        where = "vulnerability_gate"
        default = _rule(body, GateRule(), where, f"{where}.allow")
        overrides = [
            (
                prefix,
                _rule(
                    sub,
                    default,
                    f"{where}.repositories.{prefix}",
                    f"{where}.repositories.{prefix}.allow",
                ),
            )
            for prefix, sub in (body.get("repositories") or {}).items()
        ]
        overrides.sort(key=lambda pair: len(pair[0]), reverse=True)
        return cls(default, tuple(overrides))

    def rule_for(self, repository: str) -> GateRule:
        for prefix, rule in self.overrides:
            if repository.startswith(prefix):
                return rule
        return self.default


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    message: str
    blocking: tuple[Finding, ...] = ()
    wait_seconds: float = 0.0  # for "wait": how long to wait for the scan, then decide again
    final: bool = True  # based on a finished scan (cache it for the full TTL)

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"


def blocking_findings(rule: GateRule, report: Report) -> list[Finding]:
    if rule.block_severity is None:
        return []
    return [f for f in report.at_or_above(rule.block_severity) if f.cve.upper() not in rule.allow]


def _describe(finding: Finding) -> str:
    installed = f" {finding.installed_version}" if finding.installed_version else ""
    fix = f", fixed in {finding.fixed_version}" if finding.fixed_version else ", no fix yet"
    return f"{finding.cve} ({finding.severity}, {finding.package}{installed}{fix})"


def denial_message(rule: GateRule, image: str, blocking: list[Finding]) -> str:
    """Names the worst CVEs (the findings come worst first) and how to allow-list them."""
    firsts: dict[str, Finding] = {}
    for finding in blocking:
        firsts.setdefault(finding.cve, finding)
    cves = list(firsts)
    named = "; ".join(_describe(firsts[cve]) for cve in cves[:NAMED])
    more = f" and {len(cves) - NAMED} more" if len(cves) > NAMED else ""
    count = f"{len(cves)} vulnerabilit{'y' if len(cves) == 1 else 'ies'}"
    return (
        f"{image} is blocked by the vulnerability gate: {count} at or above"
        f" {rule.block_severity}: {named}{more}. To allow it, add"
        f" {', '.join(cves[:NAMED])}{' ...' if more else ''} to {rule.allow_key}"
    )


def _unscanned(rule: GateRule, image: str, status: ScanStatus) -> Decision:
    said = f"{image} has no finished vulnerability scan ({status.state})"
    if status.reason:
        said += f": {status.reason}"
    if rule.unscanned == "allow":
        return Decision("allow", said + "; allowed", final=False)
    if rule.unscanned == "wait" and not status.done:
        return Decision("wait", said, wait_seconds=rule.wait_seconds, final=False)
    # "deny", or "wait" on a scan that failed or can never run: waiting cannot help.
    return Decision("deny", said + "; the vulnerability gate denies unscanned images", final=False)


def decide(
    policy: GatePolicy, repository: str, status: ScanStatus, report: Report | None, image: str = ""
) -> Decision:
    """The gate's answer for one image; ``report`` is read only when the scan finished."""
    rule = policy.rule_for(repository)
    image = image or repository
    if status.state != "finished" or report is None:
        return _unscanned(rule, image, status)
    blocking = blocking_findings(rule, report)
    if blocking:
        return Decision("deny", denial_message(rule, image, blocking), tuple(blocking))
    return Decision("allow", f"{image} passed the vulnerability gate")


def timed_out(policy: GatePolicy, repository: str, image: str = "") -> Decision:
    """The answer when a "wait" ran out before the scan finished."""
    rule = policy.rule_for(repository)
    return Decision(
        "deny",
        f"{image or repository} was not scanned within {rule.wait_seconds:g} s;"
        " the vulnerability gate denies unscanned images",
        final=False,
    )


class DecisionCache:
    """Decisions per (repository, digest) for ``ttl`` seconds of ``clock``.

    A decision on an unfinished scan lives only ``unscanned_ttl``, so a scan that
    finishes soon is seen soon; concurrent misses for one key share one computation.
    """

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float],
        unscanned_ttl: float | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._ttl = ttl
        self._unscanned_ttl = min(ttl, 30.0) if unscanned_ttl is None else unscanned_ttl
        self._clock = clock
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, Decision]] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[Decision]] = {}

    def get(self, repository: str, digest: str) -> Decision | None:
        entry = self._entries.get((repository, digest))
        if entry is None or entry[0] <= self._clock():
            self._entries.pop((repository, digest), None)
            return None
        return entry[1]

    def put(self, repository: str, digest: str, decision: Decision) -> None:
        if decision.verdict == "wait":
            return  # a wait is a step towards a decision, not one
        ttl = self._ttl if decision.final else self._unscanned_ttl
        self._entries.pop((repository, digest), None)
        self._entries[(repository, digest)] = (self._clock() + ttl, decision)
        while len(self._entries) > self._max:
            del self._entries[next(iter(self._entries))]  # the oldest insertion

    async def get_or_decide(
        self, repository: str, digest: str, decide: Callable[[], Awaitable[Decision]]
    ) -> Decision:
        cached = self.get(repository, digest)
        if cached is not None:
            return cached
        key = (repository, digest)
        running = self._pending.get(key)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not running.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The caller that was deciding went away; this one decides instead.
                return await self.get_or_decide(repository, digest, decide)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            decision = await decide()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # marked retrieved: waiters, if any, get it re-raised
            raise
        finally:
            self._pending.pop(key, None)
        self.put(repository, digest, decision)
        future.set_result(decision)
        return decision
