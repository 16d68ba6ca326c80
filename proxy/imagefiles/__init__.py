"""Image references in the files a team already has (``gar-proxy warm -f PATH...``):
Kubernetes manifests and rendered Helm charts, Compose files, GitHub Actions and
GitLab CI files, Dockerfiles. Pure reading: resolving and pulling is the warming
service's (``proxy/services/warm_files.py``).

``scan(paths)`` reads files and walks directories (``.git`` and ``node_modules``
left out, symbolic links to directories not followed): YAML files by their shape
(``yamlfiles``), Dockerfiles and Containerfiles by name (``dockerfile``). A file
named on the command line is read whatever its name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from proxy.imagefiles.dockerfile import dockerfile_images
from proxy.imagefiles.found import Found, Problem
from proxy.imagefiles.variables import Inputs
from proxy.imagefiles.yamlfiles import yaml_images

__all__ = ["Found", "Inputs", "Problem", "Scan", "scan"]
SKIPPED_DIRECTORIES = frozenset((".git", "node_modules", ".venv", "__pycache__"))
MAX_FILE = 8 * 1024 * 1024  # bigger is no manifest anyone wrote by hand


@dataclass
class Scan:
    found: list[Found] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0


def is_dockerfile(name: str) -> bool:
    lowered = name.lower()
    return any(
        lowered == base or lowered.startswith(base + ".") or lowered.endswith("." + base)
        for base in ("dockerfile", "containerfile")
    )


def _is_yaml(name: str) -> bool:
    return name.lower().endswith((".yaml", ".yml"))


def _read(path: Path, scan: Scan, inputs: Inputs) -> None:
    try:
        if path.stat().st_size > MAX_FILE:
            scan.problems.append(Problem(str(path), str(path), "over 8 MiB: not read"))
            return
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        scan.problems.append(Problem(str(path), str(path), f"cannot read it: {error}"))
        return
    scan.files += 1
    items = (
        dockerfile_images(text, str(path), inputs)
        if is_dockerfile(path.name) and not _is_yaml(path.name)
        else yaml_images(text, path, inputs)
    )
    for item in items:
        if isinstance(item, Found):
            scan.found.append(item)
        else:
            scan.problems.append(item)


def _walk(root: Path) -> Iterable[Path]:
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
        for name in sorted(names):
            if _is_yaml(name) or is_dockerfile(name):
                yield Path(directory) / name


def scan(paths: Iterable[Path], inputs: Inputs | None = None) -> Scan:
    """Everything the files name, in the order met; ``inputs``: the platforms a
    Dockerfile is built for and on, ``--build-arg``s, and the environment and
    ``--env-file`` values Compose files read (none of them when None)."""
    inputs = inputs or Inputs()
    result = Scan()
    for path in paths:
        if path.is_dir():
            for found in _walk(path):
                _read(found, result, inputs)
        elif path.exists():
            _read(path, result, inputs)
        else:
            result.problems.append(Problem(str(path), str(path), "no such file or directory"))
    return result
