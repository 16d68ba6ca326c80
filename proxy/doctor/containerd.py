"""containerd: does its CRI plugin (the kubelet's pulls) send each registry the proxy
serves to the proxy? That takes, by version (deploy/containerd/README.md):

- a ``config_path`` in the section that version reads: ``plugins."io.containerd.grpc.v1.cri"
  .registry`` in 1.x; ``plugins."io.containerd.cri.v1.images".registry`` in 2.x (which
  also migrates the 1.x section of a ``version = 2`` file); one directory, since a
  ``dir1:dir2`` list (2.x's default) silently disables mirrors on some pull paths
  (containerd #12415, #12636);
- from 2.1, ``use_local_image_pull = true``: CRI pulls otherwise go through the transfer
  service, which did not use the mirrors (spegel #1272);
- ``certs.d/<host>/hosts.toml`` for each registry host, with a ``[host."http://PROXY"]``
  that may pull.
"""

from __future__ import annotations

import glob
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.doctor import Finding, Target, cri

V1_SECTION = ("plugins", "io.containerd.grpc.v1.cri", "registry")
V2_SECTION = ("plugins", "io.containerd.cri.v1.images", "registry")
V2_DEFAULT = "/etc/containerd/certs.d:/etc/docker/certs.d"
RECIPE = "deploy/containerd/config-{}.toml"


def parse_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` from what containerd says of itself.

    >>> parse_version("1.6.20~ds1"), parse_version("v2.1.4"), parse_version("main")
    ((1, 6), (2, 1), None)
    """
    found = re.search(r"v?(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else None


def running_version(socket: str, binary: str) -> str:
    """The running daemon's version (its CRI answer), else the binary's."""
    try:
        return cri.version(socket)
    except cri.CriError:
        pass
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    words = out.split()
    return words[2] if len(words) > 2 else out.strip()


def _get(table: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    return table


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def load_config(path: Path) -> dict[str, Any]:
    """config.toml with its ``imports`` merged in, as containerd reads it."""
    config = tomllib.loads(path.read_text())
    for pattern in config.get("imports", []):
        pattern = str(path.parent / pattern) if not Path(pattern).is_absolute() else pattern
        for name in sorted(glob.glob(pattern)):
            _merge(config, tomllib.loads(Path(name).read_text()))
    return config


def recipe(version: tuple[int, int]) -> str:
    if version[0] < 2:
        return RECIPE.format("1.x")
    return RECIPE.format("2.0" if version == (2, 0) else "2.1")


def config_problems(
    config: dict[str, Any], version: tuple[int, int]
) -> tuple[str | None, list[str]]:
    """(the config_path in effect, what is wrong with the plugin settings)."""
    problems: list[str] = []
    v1 = _get(config, V1_SECTION) or {}
    v2 = _get(config, V2_SECTION) or {}
    if version[0] < 2:
        if v2:
            problems.append("the file has containerd 2.x's [plugins.'io.containerd.cri.v1.images"
                            "'.registry], which containerd 1.x ignores")  # fmt: skip
        path = v1.get("config_path") or None
        if path is None:
            problems.append('no config_path under [plugins."io.containerd.grpc.v1.cri".registry]'
                            ": containerd 1.x reads no hosts.toml at all")  # fmt: skip
    else:
        path = v2.get("config_path") or v1.get("config_path") or V2_DEFAULT
        if ":" in path:
            problems.append(f"config_path is {path!r}: give one directory (containerd #12415, "
                            "#12636: a list silently disables mirrors)")  # fmt: skip
        images = _get(config, V2_SECTION[:2]) or {}
        if version >= (2, 1) and images.get("use_local_image_pull") is not True:
            problems.append("containerd 2.1+ pulls through the transfer service: set "
                            "use_local_image_pull = true under "
                            "[plugins.'io.containerd.cri.v1.images'] (spegel #1272)")  # fmt: skip
    if (v1 or {}).get("mirrors") and (v1 or {}).get("config_path"):
        problems.append("registry.mirrors beside config_path: containerd refuses the CRI "
                        "plugin's config; delete the mirrors tables")  # fmt: skip
    return path, problems


def host_problems(certs: Path, target: Target) -> tuple[list[str], list[str]]:
    """(hosts routed to the proxy, what to write for the others)."""
    routed, fixes = [], []
    for host in target.hosts:
        file = certs / host / "hosts.toml"
        try:
            hosts = tomllib.loads(file.read_text()).get("host", {})
        except (OSError, tomllib.TOMLDecodeError):
            hosts = {}
        ours = [
            url for url, entry in hosts.items()
            if urlsplit(url).netloc in target.addresses()
            and "pull" in entry.get("capabilities", ["pull", "resolve", "push"])
        ]  # fmt: skip
        if ours:
            routed.append(host)
        else:
            fixes.append(f'write {file}: [host."{target.url}"] capabilities = ["pull", "resolve"]'
                         " (deploy/containerd/hosts.toml)")  # fmt: skip
    return routed, fixes


def inspect(config_file: Path, socket: str, binary: str, target: Target) -> Finding:
    finding = Finding("containerd", present=config_file.exists() or Path(socket).exists())
    finding.source = str(config_file)
    if not finding.present:
        return finding
    text = running_version(socket, binary)
    version = parse_version(text) or (1, 7)
    finding.runtime = f"containerd {text or '(version unknown: taken as 1.7)'}"
    try:
        config = load_config(config_file) if config_file.exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        finding.fixes.append(f"{config_file} does not parse: {error}")
        return finding
    path, problems = config_problems(config, version)
    fix = f"(the settings are in {recipe(version)}), then restart containerd"
    finding.fixes += [f"{problem} {fix}" for problem in problems]
    directory = Path((path or "/etc/containerd/certs.d").split(":")[0])
    routed, writes = host_problems(directory, target)
    finding.fixes += writes
    finding.routed = [] if problems else routed
    if routed:
        finding.notes.append(f"{', '.join(routed)} go to {target.url} ({directory})")
    finding.ok = not finding.fixes
    return finding
