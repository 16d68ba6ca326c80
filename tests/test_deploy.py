"""deploy/ works as written: every file parses, the Kubernetes manifests pass the API
schema (kubernetes-validate, offline, strict: an unknown field fails), the systemd unit
passes ``systemd-analyze verify`` with no warning, and the examples agree with the image
(its uid, its healthcheck command, its cache path) and with each other.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import require_binaries

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DOCKERFILE = (REPO / "Dockerfile").read_text()
# Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29.
OLDEST_KUBERNETES = "1.29.0"
NEWEST_KUBERNETES = "1.37.0"


def _files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in suffixes)


def _yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, doc) for p in _files(".yaml") if "k8s" in p.parts for doc in _yaml_documents(p)]


def _by_kind(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in _manifests() if doc["kind"] == kind]
    matches = [doc for doc in found if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def _image_uid() -> int:
    match = re.search(r"^USER (\d+)", DOCKERFILE, re.MULTILINE)
    assert match, "Dockerfile has no numeric USER"
    return int(match.group(1))


def _healthcheck_in_image() -> list[str]:
    """The image's HEALTHCHECK command, which the Kubernetes probes use too."""
    match = re.search(r'^\s+CMD \["gar-proxy", "healthcheck"\]$', DOCKERFILE, re.MULTILINE)
    assert match, "Dockerfile's HEALTHCHECK is not gar-proxy healthcheck"
    return ["gar-proxy", "healthcheck"]


@pytest.mark.parametrize("path", _files(".yaml", ".yml"), ids=str)
def test_every_yaml_file_parses(path: Path) -> None:
    assert _yaml_documents(path)


@pytest.mark.parametrize("path", _files(".toml", ".json"), ids=str)
def test_every_toml_and_json_file_parses(path: Path) -> None:
    text = path.read_text()
    assert tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_kubernetes_manifests_pass_the_api_schema(version: str) -> None:
    manifests = _manifests()
    assert {doc["kind"] for _, doc in manifests} >= {"Pod", "DaemonSet", "ServiceAccount"}
    for path, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {error}")


def test_the_runner_pod_has_the_proxy_as_a_native_sidecar() -> None:
    pod = _by_kind("Pod", "ci-runner")["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "gar-proxy"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["readinessProbe"]["exec"]["command"] == [*_healthcheck_in_image(), "/readyz"]
    assert sidecar["livenessProbe"]["exec"]["command"] == [*_healthcheck_in_image(), "/healthz"]
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["runAsUser"] == _image_uid()
    assert {"requests", "limits"} <= sidecar["resources"].keys()
    # The cache lives on an emptyDir, the root file system being read-only.
    cache_mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == "/cache")
    volume = next(v for v in pod["volumes"] if v["name"] == cache_mount["name"])
    assert "emptyDir" in volume
    account = _by_kind("ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]


def test_the_daemonset_listens_on_the_nodes_loopback_and_installs_the_hosts_toml() -> None:
    spec = _by_kind("DaemonSet", "gar-proxy")["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    (proxy,) = spec["containers"]
    env = {e["name"]: e["value"] for e in proxy["env"]}
    assert env["GAR_PROXY_SERVER_LISTEN"] == "127.0.0.1:5000"
    assert proxy["readinessProbe"]["exec"]["command"] == [*_healthcheck_in_image(), "/readyz"]
    config = _by_kind("ConfigMap", "gar-proxy-containerd")["data"]["hosts.toml"]
    standalone = (DEPLOY / "containerd" / "hosts.toml").read_text()
    assert tomllib.loads(config) == tomllib.loads(standalone)


def test_the_containerd_hosts_toml_makes_the_proxy_a_mirror_for_one_location() -> None:
    hosts = tomllib.loads((DEPLOY / "containerd" / "hosts.toml").read_text())
    assert re.fullmatch(r"https://[a-z0-9-]+-docker\.pkg\.dev", hosts["server"])
    mirror = hosts["host"]["http://127.0.0.1:5000"]
    # Pull only: containerd adds ?ns=<server host> to mirror requests, which names the
    # location for the proxy. A push through a mirror is not something containerd does.
    assert mirror["capabilities"] == ["pull", "resolve"]


def _unit(path: Path) -> configparser.ConfigParser:
    # Repeated keys (Environment=) are legal in a unit; keep the last, check the text.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_the_systemd_unit_hands_the_key_over_with_load_credential() -> None:
    path = DEPLOY / "systemd" / "gar-proxy.service"
    unit = _unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    name, _, source = unit["Service"]["LoadCredential"].partition(":")
    assert source.startswith("/")
    assert f"Environment=GOOGLE_APPLICATION_CREDENTIALS=%d/{name}\n" in path.read_text()


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require_binaries("systemd-analyze")  # skipped on a developer machine without it; CI fails
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    # verify insists that ExecStart's binary exists: point it at this checkout's.
    gar_proxy = Path(sys.executable).parent / "gar-proxy"
    assert gar_proxy.exists(), f"{gar_proxy}: install the package (pip install -e .)"
    text = (DEPLOY / "systemd" / "gar-proxy.service").read_text()
    unit = tmp_path / "gar-proxy.service"
    unit.write_text(text.replace("/opt/gar-proxy/venv/bin/gar-proxy", str(gar_proxy)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 on an unknown key, only warning: any output is a failure here.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_compose_file_has_what_compose_needs() -> None:
    compose = _yaml_documents(DEPLOY / "compose" / "compose.yaml")[0]
    service = compose["services"]["gar-proxy"]
    assert service["image"]
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+:5000", p) for p in service["ports"])
    named, mounts = set(), {}
    for spec in service["volumes"]:
        source, target, *_ = spec.split(":")
        mounts[target] = source
        if not source.startswith(("/", ".")):
            named.add(source)
    assert named <= set(compose.get("volumes", {}))
    assert "/cache" in mounts
    assert service["environment"]["GOOGLE_APPLICATION_CREDENTIALS"] in mounts


def test_the_ci_examples_run_the_proxy_as_a_service() -> None:
    github = _yaml_documents(DEPLOY / "ci" / "github-actions.yml")[0]
    (job,) = github["jobs"].values()
    assert job["services"]["gar-proxy"]["image"]
    assert "localhost:5000/" in " ".join(step["run"] for step in job["steps"])
    gitlab = _yaml_documents(DEPLOY / "ci" / "gitlab-ci.yml")[0]
    (service,) = gitlab["build"]["services"]
    compose = _yaml_documents(DEPLOY / "compose" / "compose.yaml")[0]
    check = compose["services"]["gar-proxy"]["healthcheck"]["test"]
    assert check == ["CMD", *_healthcheck_in_image()]
    assert f"{service['alias']}:5000/" in " ".join(gitlab["build"]["script"])


def test_the_ring_gives_each_replica_a_volume_and_nginx_the_tested_config() -> None:
    ring = _by_kind("StatefulSet", "gar-proxy")
    assert ring["spec"]["serviceName"] == "gar-proxy-ring"
    claims = [c["metadata"]["name"] for c in ring["spec"]["volumeClaimTemplates"]]
    mounts = ring["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "cache", "mountPath": "/cache"} in mounts and claims == ["cache"]
    # nginx.conf names one server per replica, by the headless Service's names.
    conf = (DEPLOY / "ring" / "nginx.conf").read_text()
    names = re.findall(r"server (gar-proxy-\d+)\.gar-proxy-ring:5000", conf)
    assert names == [f"gar-proxy-{n}" for n in range(ring["spec"]["replicas"])]
    # The ConfigMap holds the very file tests/test_ring.py runs on nginx.
    assert _by_kind("ConfigMap", "gar-proxy-ring-nginx")["data"]["nginx.conf"] == conf
    service = _by_kind("Service", "gar-proxy-ring-lb")
    nginx = _by_kind("Deployment", "gar-proxy-ring-nginx")
    assert service["spec"]["selector"] == nginx["spec"]["selector"]["matchLabels"]
