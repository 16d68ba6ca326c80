"""podman (and CRI-O, and skopeo): ``registries.conf`` (``CONTAINERS_REGISTRIES_CONF``,
else /etc/containers/registries.conf and its ``registries.conf.d/*.conf``). A
``[[registry]]`` for each registry host needs a ``[[registry.mirror]]`` on the proxy
with the host kept in the path (``location = "127.0.0.1:5000/us-docker.pkg.dev"``,
``insecure = true``): podman sends the mirror the name as it is, without containerd's
``?ns=``, and the proxy takes a host-qualified name (or, for a mirror with a socket of
its own, the bare name there).
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from proxy.doctor import Finding, Target

DEFAULT = Path("/etc/containers/registries.conf")


def config_files(explicit: Path | None) -> list[Path]:
    main = explicit or Path(os.environ.get("CONTAINERS_REGISTRIES_CONF") or DEFAULT)
    drop_ins = sorted((main.parent / "registries.conf.d").glob("*.conf"))
    return [p for p in (main, *drop_ins) if p.exists()]


def _registries(files: list[Path]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in files:
        found += tomllib.loads(path.read_text()).get("registry", [])
    return found


def _wanted(target: Target, host: str) -> set[str]:
    """Mirror locations that reach the proxy for ``host``."""
    wanted = {f"{address}/{host}" for address in target.addresses()}
    if host in target.mirror_listens:
        wanted.add(target.mirror_listens[host])
    return wanted


def inspect(explicit: Path | None, target: Target) -> Finding:
    files = config_files(explicit)
    source = ", ".join(map(str, files)) or str(explicit or DEFAULT)
    finding = Finding("podman", present=bool(files), source=source)
    if not files:
        return finding
    try:
        registries = _registries(files)
    except (OSError, tomllib.TOMLDecodeError) as error:
        finding.fixes.append(f"{source} does not parse: {error}")
        return finding
    for host in target.hosts:
        entry = next((r for r in registries if (r.get("prefix") or r.get("location")) == host), {})
        mirrors = {str(m.get("location", "")).rstrip("/"): m for m in entry.get("mirror", [])}
        ours = [m for location, m in mirrors.items() if location in _wanted(target, host)]
        if not ours:
            finding.fixes.append(
                f'add to {files[0]}: [[registry]] location = "{host}" with [[registry.mirror]] '
                f'location = "{target.address}/{host}" insecure = true'
            )
        elif not all(m.get("insecure") for m in ours):
            finding.fixes.append(f"set insecure = true on {host}'s proxy mirror (plain HTTP)")
        else:
            finding.notes.append(f"{host} goes to {target.address}/{host}")
            finding.routed.append(host)
    finding.ok = not finding.fixes
    return finding


def pull(podman: list[str], image: str, explicit: Path | None) -> tuple[bool, str]:
    env = dict(os.environ)
    if explicit is not None:
        env["CONTAINERS_REGISTRIES_CONF"] = str(explicit)
    result = subprocess.run(
        [*podman, "pull", "--quiet", image],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    return result.returncode == 0, (result.stderr or result.stdout).strip()[-300:] or image
