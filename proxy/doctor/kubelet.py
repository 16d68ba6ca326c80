"""The kubelet: which image service its pulls go to (``imageServiceEndpoint``, else
``containerRuntimeEndpoint``, in its config file or as ``--image-service-endpoint`` /
``--container-runtime-endpoint`` flags). The kubelet adds no mirror of its own: its
pulls reach the proxy exactly when that runtime's do (containerd's CRI plugin and its
``hosts.toml``; CRI-O's ``registries.conf``, as podman's).

The fields are read with a pattern rather than a YAML parser: they are top-level
``key: value`` lines in every KubeletConfiguration, and the image needs no YAML library.
"""

from __future__ import annotations

import re
from pathlib import Path

from proxy.doctor import Finding

_FIELD = re.compile(r"^(imageServiceEndpoint|containerRuntimeEndpoint):\s*['\"]?([^'\"\s#]+)", re.M)
_FLAG = re.compile(r"--(image-service-endpoint|container-runtime-endpoint)[= ]['\"]?([^'\"\s]+)")


def endpoint(config: Path, flags: Path) -> str | None:
    found: dict[str, str] = {}
    for path, pattern in ((config, _FIELD), (flags, _FLAG)):
        if path.exists():
            for key, value in pattern.findall(path.read_text()):
                found[key.replace("-", "").lower()] = value  # flags win, being read last
    return found.get("imageserviceendpoint") or found.get("containerruntimeendpoint")


def inspect(
    config: Path, flags: Path, containerd: Finding, containerd_socket: str, podman: Finding
) -> Finding:
    finding = Finding("kubelet", present=config.exists() or flags.exists(), source=str(config))
    if not finding.present:
        return finding
    where = endpoint(config, flags) or "unix:///run/containerd/containerd.sock"
    finding.notes.append(f"image service: {where}")
    if "containerd" in where or where.removeprefix("unix://") == containerd_socket:
        finding.notes.append("the kubelet pulls through containerd's CRI plugin: see containerd")
        finding.ok = containerd.ok
        if not containerd.ok:
            finding.fixes.append("fix containerd as said above")
    elif "crio" in where:
        finding.notes.append("CRI-O reads registries.conf, as podman does: see podman")
        finding.ok = podman.ok
        if not podman.ok:
            finding.fixes.append("add the [[registry.mirror]] entries said for podman")
    else:
        finding.fixes.append(f"unknown image service {where}: point it at containerd or CRI-O")
    return finding
