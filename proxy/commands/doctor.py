"""``gar-proxy doctor [--pull IMAGE]``: for each container runtime on this machine,
whether its pulls go through this proxy and what to change if not (``proxy.doctor``).

Where each runtime's configuration is read, and how to point the doctor elsewhere (a
test's private daemons, a node's files mounted under /host): the runtimes' own
variables where they have one (``DOCKER_HOST``, ``CONTAINERD_ADDRESS``,
``CONTAINERS_REGISTRIES_CONF``), else the options below.

``--pull IMAGE`` pulls IMAGE through each runtime whose configuration sends it to the
proxy (dockerd, containerd's CRI as the kubelet pulls, podman) and reads the proxy's
``garproxy_requests_total`` manifest count before and after: a pull that succeeded
without the count moving came from somewhere else (a daemon that did not reload its
configuration, a local copy). A runtime that would not reach the proxy is not asked to
pull: that pull would go to the registry itself. Exit 0 when every runtime found goes
through the proxy (and every pull was served by it), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxy.config import Settings
from proxy.doctor import (
    Finding,
    Target,
    address,
    containerd,
    cri,
    docker,
    image_host,
    kubelet,
    podman,
)

Say = Callable[[str], None]
MANIFEST_COUNTER = "garproxy_requests"


def add_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    doctor = command("doctor", "do this machine's container runtimes pull through the proxy?")
    option = doctor.add_argument
    option("--pull", metavar="IMAGE", help="pull IMAGE through each runtime and confirm it")
    option("--json", action="store_true", help="the findings as JSON")
    option("--docker-config", type=Path, default=Path("/etc/docker/daemon.json"))
    option("--docker", default="docker", help="docker command (DOCKER_HOST picks the daemon)")
    option("--containerd-config", type=Path, default=Path("/etc/containerd/config.toml"))
    option(
        "--containerd-address",
        default=os.environ.get("CONTAINERD_ADDRESS", "/run/containerd/containerd.sock"),
    )
    option("--containerd", default="containerd", help="containerd binary, for its version")
    option(
        "--podman-registries",
        type=Path,
        default=None,
        help="registries.conf (default: CONTAINERS_REGISTRIES_CONF, /etc/containers/...)",
    )
    option("--podman", default="podman", help="podman command")
    option("--kubelet-config", type=Path, default=Path("/var/lib/kubelet/config.yaml"))
    option("--kubelet-flags", type=Path, default=Path("/var/lib/kubelet/kubeadm-flags.env"))


def target(settings: Settings) -> Target:
    hosts: list[str] = []
    if settings.upstream.is_gar:
        locations = {settings.routing.location, *(r.location for r in settings.routing.routes)}
        hosts += sorted(f"{location}-docker.pkg.dev" for location in locations)
    hosts += [m.host for m in settings.routing.mirrors]
    listens = {m.host: address(*m.listen) for m in settings.routing.mirrors if m.listen}
    return Target(address(*settings.server.listen), listens, tuple(hosts))


def manifest_requests(settings: Settings) -> float | None:
    """The proxy's answered manifest requests so far (None: /metrics did not answer)."""
    scheme = "https" if settings.tls.cert_file else "http"
    url = f"{scheme}://{address(*settings.server.listen)}/metrics"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its own address
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return sum(
        sample.value
        for family in text_string_to_metric_families(text) if family.name == MANIFEST_COUNTER
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("kind") == "manifest"
        and sample.labels.get("status", "").startswith("2")
    )  # fmt: skip


def _confirm(finding: Finding, settings: Settings, pull: Callable[[], tuple[bool, str]]) -> None:
    before = manifest_requests(settings)
    ok, detail = pull()
    after = manifest_requests(settings)
    if not ok:
        finding.pull, finding.ok = f"failed: {detail}", False
    elif before is None or after is None:
        finding.pull = f"pulled ({detail}); the proxy's /metrics did not answer, so unconfirmed"
    elif after > before:
        finding.pull = f"pulled through the proxy ({after - before:.0f} manifest requests)"
    else:
        finding.pull, finding.ok = (
            "pulled, but not through the proxy (its counters did not move)",
            False,
        )


def findings(args: argparse.Namespace, settings: Settings) -> list[Finding]:
    goal = target(settings)
    docker_command = shlex.split(args.docker)
    found_docker = docker.inspect(args.docker_config, goal, docker_command)
    found_containerd = containerd.inspect(
        args.containerd_config, args.containerd_address, args.containerd, goal
    )
    found_podman = podman.inspect(args.podman_registries, goal)
    found_kubelet = kubelet.inspect(
        args.kubelet_config,
        args.kubelet_flags,
        found_containerd,
        args.containerd_address,
        found_podman,
    )
    if args.pull:
        image, host = args.pull, image_host(args.pull)
        if host in found_docker.routed:
            _confirm(found_docker, settings, lambda: docker.pull(docker_command, image, goal))
        if host in found_containerd.routed:
            _confirm(found_containerd, settings, lambda: _cri_pull(args.containerd_address, image))
        if host in found_podman.routed:
            command = shlex.split(args.podman)
            _confirm(found_podman, settings,
                     lambda: podman.pull(command, image, args.podman_registries))  # fmt: skip
        for finding in (found_docker, found_containerd, found_podman):
            if finding.present and finding.pull is None:
                finding.pull = (
                    f"not pulled: this runtime's pulls of {host} would not reach the proxy"
                )
    return [found_docker, found_containerd, found_podman, found_kubelet]


def _cri_pull(socket: str, image: str) -> tuple[bool, str]:
    try:
        return True, cri.pull(socket, image)
    except cri.CriError as error:
        return False, str(error)[-300:]


def run(args: argparse.Namespace, settings: Settings, say: Say) -> int:
    found = findings(args, settings)
    if args.json:
        say(json.dumps([f.as_json() for f in found], indent=2))
    else:
        say(f"gar-proxy at {target(settings).url}; registries: {', '.join(target(settings).hosts)}")
        for finding in found:
            for line in finding.lines():
                say(line)
    present = [f for f in found if f.present]
    if not present:
        say("no container runtime found (dockerd, containerd, podman, kubelet)")
    return 0 if present and all(f.ok for f in present) else 1
