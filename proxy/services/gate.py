"""The vulnerability gate on manifest pulls: allow, or refuse with ``DENIED``.

Asked by the manifest service for every image manifest a client GETs, by tag or by
digest, the children of an index included (a client fetches each by digest). An index
itself is let through: Container Analysis scans the images, not the list of them, and a
client can only run what it fetches next. HEAD shows no content and is not gated.

A decision comes from the scan's status and, once the scan finished, its report
(``proxy.gar.policy``); it is cached per (repository, digest) for
``vulnerability_gate.decision_ttl`` (a decision on an unfinished scan for at most
30 s), and concurrent pulls of one digest share one set of queries. When the gate is
off, the manifest service holds no gate at all: no query, no lookup.

If Container Analysis cannot be asked (outage, permission), the pull fails with that
upstream error and nothing is cached: a security gate that is not sure does not open.
"""

from __future__ import annotations

import logging

from proxy.clock import Clock
from proxy.config import VulnerabilityGateSettings
from proxy.gar.policy import Decision, DecisionCache, GatePolicy, decide, timed_out
from proxy.gar.vulnerabilities import (
    Resource,
    ScanFailed,
    ScanStatus,
    ScanTimeout,
    VulnerabilityClient,
    wait_for_scan,
)
from proxy.oci import mediatypes as mt
from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository

log = logging.getLogger("gar_proxy.gate")


def resource_of(repo: Repository, digest: Digest) -> Resource:
    """The image as Container Analysis names it; ``repo`` has its location resolved."""
    if repo.location is None:
        raise RegistryError(ErrorCode.NAME_INVALID, f"{repo.path}: no Artifact Registry location")
    return Resource(repo.location, repo.project, repo.repository or "", repo.image, digest)


class VulnerabilityGate:
    def __init__(
        self, settings: VulnerabilityGateSettings, client: VulnerabilityClient, clock: Clock
    ) -> None:
        self.policy = GatePolicy.from_mapping(settings.policy_table())
        self.client = client
        self.clock = clock
        self.decisions = DecisionCache(settings.decision_ttl, clock.monotonic)

    async def check(self, repo: Repository, digest: Digest, media_type: str) -> None:
        """Returns when the manifest may be served; raises ``DENIED`` when not."""
        if media_type in mt.INDEX_TYPES:
            return
        decision = await self.decisions.get_or_decide(
            str(repo), str(digest), lambda: self._decide_or_say_why(repo, digest)
        )
        if not decision.allowed:
            raise RegistryError(
                ErrorCode.DENIED,
                decision.message,
                detail={"name": repo.path, "digest": str(digest), "gate": "vulnerability"},
            )

    async def _decide_or_say_why(self, repo: Repository, digest: Digest) -> Decision:
        try:
            return await self.decide(repo, digest)
        except RegistryError as error:  # say it was the gate's question that failed
            raise RegistryError(
                error.code,
                f"the vulnerability gate could not ask Container Analysis: {error.message}",
                headers=error.headers,
            ) from None

    async def decide(self, repo: Repository, digest: Digest) -> Decision:
        resource = resource_of(repo, digest)
        image = f"{repo}@{digest}"
        status = await self.client.scan_status(resource)
        report = await self.client.report(resource) if status.state == "finished" else None
        decision = decide(self.policy, repo.path, status, report, image)
        if decision.verdict == "wait":
            decision = await self._wait(repo, resource, image, decision.wait_seconds)
        if not decision.allowed:
            log.warning("vulnerability gate: %s", decision.message)
        return decision

    async def _wait(
        self, repo: Repository, resource: Resource, image: str, seconds: float
    ) -> Decision:
        try:
            report = await wait_for_scan(
                self.client,
                resource,
                deadline=self.clock.monotonic() + seconds,
                clock=self.clock.monotonic,
                sleep=self.clock.sleep,
            )
        except ScanTimeout:
            return timed_out(self.policy, repo.path, image)
        except ScanFailed as error:  # unsupported included: waiting longer cannot help
            return decide(self.policy, repo.path, ScanStatus("failed", str(error)), None, image)
        return decide(self.policy, repo.path, ScanStatus("finished"), report, image)
