"""``[vulnerability_gate]``: manifest pulls refused on a finished scan's findings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config.fields import setting
from proxy.config.values import (
    GateOverrides,
    choice,
    overrides_table,
    parse_bool,
    parse_cves,
    parse_duration,
    parse_gate_overrides,
    parse_severity,
)


@dataclass(frozen=True)
class VulnerabilityGateSettings:
    """Refuse images whose finished scan has findings at or above a severity
    (``proxy.gar.policy`` reads these; its messages name the keys)."""

    enabled: bool = setting(False, parse_bool, doc="gate manifest pulls on scan results")
    block_severity: str = setting("CRITICAL", parse_severity, doc="block at or above this")
    allow: tuple[str, ...] = setting(
        (), parse_cves, doc='CVE ids that never block ("CVE-1,CVE-2" in the environment)'
    )
    unscanned: str = setting(
        "allow", choice("allow", "deny", "wait"), doc="no finished scan: wait up to wait_seconds"
    )
    wait_seconds: float = setting(60.0, parse_duration, doc="how long unscanned = wait waits")
    repositories: GateOverrides = setting(
        (), parse_gate_overrides,
        doc="per repository prefix (longest wins): a table of the keys above; allow adds "
        "to the global list, the rest replace (environment: JSON)",
    )  # fmt: skip
    decision_ttl: float = setting(
        600.0, parse_duration, doc="a decision per repository and digest is reused this long"
    )

    def policy_table(self) -> dict[str, Any]:
        """The mapping ``GatePolicy.from_mapping`` takes."""
        return {
            "block_severity": self.block_severity,
            "allow": list(self.allow),
            "unscanned": self.unscanned,
            "wait_seconds": self.wait_seconds,
            "repositories": overrides_table(self.repositories),
        }
