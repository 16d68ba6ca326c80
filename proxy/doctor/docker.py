"""dockerd: ``registry-mirrors`` in ``daemon.json`` sends Docker Hub pulls (bare names,
``library/alpine``) to a mirror. That mirror must be this proxy's docker.io mirror socket
(a ``[[mirrors]]`` entry with its own ``listen``), since a bare name on the main socket
means ``PROJECT/REPO/IMAGE``; plain HTTP needs ``insecure-registries`` unless on
loopback. Other registries' names are not mirrored by dockerd: GAR images are pulled as
``PROXY/PROJECT/REPO/IMAGE``. The running daemon's view (``docker info``) shows whether
a changed file was loaded (dockerd reads it at start, or on SIGHUP for some keys).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from proxy.doctor import Finding, Target, image_host

DOCKER_HUB = "docker.io"


def _mirror_address(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.netloc


def live_mirrors(docker: list[str]) -> list[str] | None:
    """The running dockerd's registry mirrors (None: no daemon answered)."""
    try:
        out = subprocess.run(
            [*docker, "info", "--format", "{{json .RegistryConfig.Mirrors}}"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    found = json.loads(out or "null")
    return [str(m) for m in found or []]


def inspect(daemon_json: Path, target: Target, docker: list[str]) -> Finding:
    finding = Finding("dockerd", present=daemon_json.exists(), source=str(daemon_json))
    running = live_mirrors(docker)
    if not finding.present and running is None:
        return finding
    finding.present = True
    try:
        config = json.loads(daemon_json.read_text()) if daemon_json.exists() else {}
    except (OSError, ValueError) as error:
        finding.fixes.append(f"{daemon_json} does not parse: {error}")
        return finding
    mirrors = [str(m) for m in config.get("registry-mirrors", [])]
    insecure = {str(r) for r in config.get("insecure-registries", [])}
    wanted = target.mirror_listens.get(DOCKER_HUB)
    finding.notes.append(f"GAR images: docker pull {target.address}/PROJECT/REPO/IMAGE:TAG")
    # Named with the proxy's address, any image reaches it; Docker Hub's bare names only
    # through registry-mirrors.
    finding.routed = [h for h in target.hosts if h != DOCKER_HUB]
    if wanted is None:
        finding.fixes.append(
            "Docker Hub names cannot reach the proxy: give gar-proxy a docker.io mirror with "
            'a socket of its own ([[mirrors]] host = "docker.io", listen = "127.0.0.1:5001"), '
            "then point registry-mirrors at it"
        )
        return finding
    ours = [m for m in mirrors if _mirror_address(m) == wanted]
    if not ours:
        finding.fixes.append(
            f'add "registry-mirrors": ["http://{wanted}"] and "insecure-registries": '
            f'["{wanted}"] to {daemon_json}, then restart dockerd'
            + (f" (now: {mirrors})" if mirrors else "")
        )
        return finding
    if not wanted.startswith(("127.", "[::1]", "localhost")) and wanted not in insecure:
        finding.fixes.append(f'add "{wanted}" to "insecure-registries" (the mirror is HTTP)')
        return finding
    if running is not None and not any(_mirror_address(m) == wanted for m in running):
        finding.fixes.append(
            f"{daemon_json} names the mirror, but the running dockerd does not use it "
            f"(its mirrors: {running or 'none'}): restart dockerd"
        )
        return finding
    finding.notes.append(f"Docker Hub names go to http://{wanted} (registry-mirrors)")
    finding.routed.append(DOCKER_HUB)
    finding.ok = True
    return finding


def pull(docker: list[str], image: str, target: Target) -> tuple[bool, str]:
    """Pull ``image`` through dockerd as a user would name it: a Docker Hub name as is
    (registry-mirrors route it), anything else through the proxy's address."""
    ref = image if image_host(image) == DOCKER_HUB else f"{target.address}/{image}"
    result = subprocess.run(
        [*docker, "pull", "--quiet", ref], capture_output=True, text=True, timeout=300, check=False
    )
    return result.returncode == 0, (result.stderr or result.stdout).strip()[-300:] or ref
