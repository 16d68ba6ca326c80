"""``gar-proxy vulns | sbom | cleanup-preview | where``: what GAR knows, for people and CI.

Aligned tables by default, ``--json`` for machines (the same objects the server's
``/_gar-proxy/...`` paths answer). ``vulns --fail-on SEVERITY`` exits 1 exactly when a
finding at or above that severity exists, so it can gate a CI job; a failure to tell
(unknown image, scan timeout, upstream error) exits 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from proxy.config.values import SEVERITY_NAMES
from proxy.gar.vulnerabilities import SEVERITIES
from proxy.services import reports
from proxy.services.container import Services

COMMANDS = ("vulns", "sbom", "cleanup-preview", "where")
FINDINGS_FOUND = 1
CANNOT_TELL = 2
OnServices = Callable[[str, Callable[[Services], Awaitable[int]], int], int]
Say = Callable[[str], None]


def add_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    image = "[LOCATION-docker.pkg.dev/]PROJECT/REPO/IMAGE[:TAG|@DIGEST]"
    vulns = command("vulns", "vulnerability scan status and findings of an image")
    vulns.add_argument("image", help=image)
    vulns.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the scan")
    vulns.add_argument("--fail-on", type=str.upper, choices=SEVERITY_NAMES, metavar="SEVERITY")
    sbom = command("sbom", "the SBOM of an image (none is not an error)")
    sbom.add_argument("image", help=image)
    sbom.add_argument("--format", choices=["table", "json", "spdx", "cyclonedx"], default="table")
    preview = command("cleanup-preview", "what the repository's cleanup policies would delete")
    preview.add_argument("repository", metavar="PROJECT/LOCATION/REPO")
    where = command("where", "the location a repository resolves to, and why")
    where.add_argument("repository", metavar="PROJECT/REPO")
    for sub in (vulns, preview, where):
        sub.add_argument("--json", action="store_true", help="JSON for machines")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Columns padded to their widest cell; None shows as "-"."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def at_or_above(data: dict[str, Any], severity: str) -> int:
    limit = SEVERITIES.index(severity)
    return sum(1 for f in data["findings"] if SEVERITIES.index(f["severity"]) <= limit)


def vulns_lines(data: dict[str, Any]) -> list[str]:
    scan = data["scan"]
    state = scan["state"] + (f" ({scan['reason']})" if scan["reason"] else "")
    lines = [f"image  {data['image']}", f"scan   {state}"]
    if data["counts"]:
        lines.append("found  " + "  ".join(f"{k} {v}" for k, v in data["counts"].items() if v))
    rows = [
        (f["cve"], f["severity"], f["package"], f["installed_version"], f["fixed_version"],
         f["cvss_score"])
        for f in data["findings"]
    ]  # fmt: skip
    if rows:
        lines += ["", *table(("CVE", "SEVERITY", "PACKAGE", "INSTALLED", "FIXED", "CVSS"), rows)]
    return lines


def sbom_document(data: dict[str, Any], form: str) -> Any:
    """The packages as a minimal SPDX 2.3 or CycloneDX 1.5 document, or our JSON."""
    packages = (data["sbom"] or {}).get("packages", [])
    if form == "spdx":
        return {
            "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": data["image"], "packages": [
                {"SPDXID": f"SPDXRef-Package-{i}", "name": p["name"],
                 "versionInfo": p["version"] or "NOASSERTION",
                 "licenseDeclared": " AND ".join(p["licenses"]) or "NOASSERTION",
                 "supplier": f"Organization: {p['supplier']}" if p["supplier"] else "NOASSERTION",
                 "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER",
                                   "referenceType": "purl", "referenceLocator": p["purl"]}]
                 if p["purl"] else []}
                for i, p in enumerate(packages)],
        }  # fmt: skip
    if form == "cyclonedx":
        return {
            "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
            "metadata": {"component": {"type": "container", "name": data["image"]}},
            "components": [
                {"type": "library", "name": p["name"], "version": p["version"] or "",
                 "purl": p["purl"], "supplier": {"name": p["supplier"]} if p["supplier"] else None,
                 "licenses": [{"license": {"name": n}} for n in p["licenses"]]}
                for p in packages],
        }  # fmt: skip
    return data


def sbom_lines(data: dict[str, Any]) -> list[str]:
    found = data["sbom"]
    if found is None:
        return [f"{data['image']}: no SBOM"]
    head = f"{data['image']}: {found['format']} {found['spec_version']} from {found['location']}"
    rows = [
        (p["name"], p["version"], ", ".join(p["licenses"]) or None, p["supplier"], p["purl"])
        for p in found["packages"]
    ]
    return [head, "", *table(("NAME", "VERSION", "LICENSES", "SUPPLIER", "PURL"), rows)]


def cleanup_lines(data: dict[str, Any]) -> list[str]:
    rows = [
        (r["action"].upper(), r["package"], r["digest"][:19], ",".join(r["tags"]) or None,
         r["uploaded"], r["decided_by"])
        for r in data["delete"] + data["keep"]
    ]  # fmt: skip
    counts = f"{len(data['delete'])} to delete, {len(data['keep'])} kept"
    if data.get("dry_run"):
        counts += "; the repository's policies are in dry run: GAR only logs deletions"
    head = ("ACTION", "IMAGE", "DIGEST", "TAGS", "UPLOADED", "DECIDED BY")
    noted = [f"note: {note}" for note in data.get("notes", [])]
    return [f"{data['repository']}: {counts} (preview only)", *noted, "", *table(head, rows)]


def where_lines(data: dict[str, Any]) -> list[str]:
    """One line; a registry without locations says so rather than printing ``None``.

    >>> where_lines({"repository": "p/r", "location": None, "why": "upstream is not GAR"})
    ['p/r: no location: names go to the upstream as they are (upstream is not GAR)']
    """
    where = data["location"] or "no location: names go to the upstream as they are"
    return [f"{data['repository']}: {where} ({data['why']})"]


def _parts(text: str, count: int, shape: str) -> list[str]:
    parts = text.strip("/").split("/")
    if len(parts) != count or not all(parts):
        raise ValueError(f"expected {shape}, got {text!r}")
    return parts


def run(args: argparse.Namespace, on_services: OnServices, say: Say) -> int:
    """One of ``COMMANDS`` over the services; prints tables or JSON."""

    def show(data: Any, lines: Callable[[dict[str, Any]], list[str]], as_json: bool) -> None:
        say(json.dumps(data, indent=2) if as_json else "\n".join(lines(data)))

    async def work(services: Services) -> int:
        if args.command == "vulns":
            data = await reports.vulnerabilities(services, args.image, args.wait)
            show(data, vulns_lines, args.json)
            failing = args.fail_on and at_or_above(data, args.fail_on)
            return FINDINGS_FOUND if failing else 0
        if args.command == "sbom":
            data = await reports.software_bom(services, args.image)
            form = args.format
            show(sbom_document(data, form), sbom_lines, form != "table")
        elif args.command == "cleanup-preview":
            project, location, repo = _parts(args.repository, 3, "PROJECT/LOCATION/REPO")
            data = await reports.cleanup_preview(services, project, location, repo)
            show(data, cleanup_lines, args.json)
        else:
            project, repo = _parts(args.repository, 2, "PROJECT/REPO")
            data = await reports.where(services, project, repo)
            show(data, where_lines, args.json)
        return 0

    return on_services(args.command, work, CANNOT_TELL)
