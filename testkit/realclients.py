"""Real registry servers and clients for tests, each confined to a temp dir and 127.0.0.1.

- ``DistributionRegistry``: the CNCF distribution registry (Debian ``docker-registry``),
  plain filesystem storage, or pull-through when given ``remote_url``.
- ``Dockerd``: a private Docker engine on its own unix socket with vfs storage and no
  host networking changes; it treats 127.0.0.0/8 registries as insecure, so plain HTTP
  to ``127.0.0.1:PORT`` just works.
- ``Skopeo`` and ``Podman``: callables that add the flags a plain-HTTP loopback registry
  needs and keep the host's policy, registries.conf, auth and storage out.

Every command raises ``CommandError`` (carrying stderr) on failure::

    with DistributionRegistry(tmp_path / "reg") as reg:
        skopeo = Skopeo(tmp_path / "skopeo")
        skopeo("copy", f"oci:{layout}:v1", f"docker://{reg.host}/proj/repo/img:v1")
        assert skopeo.inspect(f"docker://{reg.host}/proj/repo/img:v1")["Digest"] == digest
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx

COMMAND_TIMEOUT = 120.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CONTAINERD_NAMESPACE_MAX = 76
PERMISSIVE_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


class CommandError(subprocess.CalledProcessError):
    """A client command failed; ``str()`` shows the tail of its stderr and stdout."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{_tail(self.stderr)}\nstdout:\n{_tail(self.output)}"


class DaemonExited(RuntimeError):
    """A background server died while we waited for it; ``log`` is the end of its log."""

    def __init__(self, what: str, returncode: int, log: str) -> None:
        super().__init__(f"{what} exited with status {returncode}:\n{log}")
        self.log = log


def run(
    cmd: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise CommandError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH (scripts/test.sh installs it)")
    return path


def free_port() -> int:
    # Racy by nature (the port is free only until someone else binds it), hence the
    # callers' retry on "address already in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


class _Daemon:
    """A long-running child in its own session, logging to a file, stopped by its own PID."""

    def __init__(
        self, what: str, cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.what, self.log = what, log
        # If pytest dies without running fixture teardown (SIGKILL, a CI timeout), the
        # server gets SIGTERM rather than outliving it; setpriv (util-linux) does the
        # prctl without a preexec_fn, which is unsafe while uvicorn threads run.
        guard = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
        with log.open("ab") as out:
            # A session of its own: a Ctrl-C meant for pytest must not stop the server
            # before the fixture's orderly stop() does.
            self.proc = subprocess.Popen(
                [*guard, *cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )

    def wait_until(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            returncode = self.proc.poll()
            if returncode is not None:
                raise DaemonExited(self.what, returncode, self.log_tail())
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.what} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return _tail(self.log.read_bytes()) if self.log.exists() else ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


def _http_ok(url: str, uds: str | None = None, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        transport = httpx.HTTPTransport(uds=uds, verify=verify)
        with httpx.Client(transport=transport, timeout=2) as client:
            return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for 127.0.0.1 and the CA (PEM) its clients must trust."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def issue(cls, directory: Path) -> TlsFiles:
        import trustme  # a dev dependency, like this module's users

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        files = cls(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
        leaf.cert_chain_pems[0].write_to_path(str(files.cert))
        leaf.private_key_pem.write_to_path(str(files.key))
        ca.cert_pem.write_to_path(str(files.ca))
        return files

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


class DistributionRegistry:
    """``docker-registry serve`` on 127.0.0.1 with storage under ``workdir``.

    ``remote_url`` turns it into a pull-through cache (``proxy: remoteurl:``); ``config``
    is deep-merged into the generated configuration (e.g. ``{"proxy": {"username": ...}}``);
    ``tls`` serves HTTPS with that certificate; ``env`` adds to its environment (e.g.
    ``SSL_CERT_FILE``, which Go reads, for a pull-through cache of an HTTPS upstream).
    """

    PORT_ATTEMPTS = 5

    def __init__(
        self,
        workdir: Path,
        *,
        remote_url: str | None = None,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.workdir, self.remote_url, self.extra_config = workdir, remote_url, config or {}
        self.extra_env, self.tls = dict(env or {}), tls
        self.storage = workdir / "storage"
        self.port = 0
        self._daemon: _Daemon | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def config(self, port: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            # A fixed secret silences the "generated random secret" warning.
            "http": {"addr": f"127.0.0.1:{port}", "secret": "gar-proxy-tests"},
        }
        if self.remote_url is not None:
            config["proxy"] = {"remoteurl": self.remote_url}
        if self.tls is not None:
            config["http"]["tls"] = {"certificate": str(self.tls.cert), "key": str(self.tls.key)}
        return _merge(config, self.extra_config)

    def start(self) -> DistributionRegistry:
        binary = require_binary("docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # REGISTRY_* variables override the config file; keep the host's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(self.extra_env)
        verify = self.tls.client_context() if self.tls else True
        scheme = "https" if self.tls else "http"
        for _ in range(self.PORT_ATTEMPTS):
            port = free_port()
            config_path = self.workdir / "config.yml"
            config_path.write_text(json.dumps(self.config(port), indent=2))  # JSON is YAML
            daemon = _Daemon(
                "docker-registry",
                [binary, "serve", str(config_path)],
                self.workdir / "registry.log",
                env,
            )
            try:
                url = f"{scheme}://127.0.0.1:{port}/v2/"
                daemon.wait_until(functools.partial(_http_ok, url, verify=verify))
            except DaemonExited as exc:
                if "address already in use" in exc.log:
                    continue
                raise
            self.port, self._daemon = port, daemon
            return self
        raise RuntimeError(f"docker-registry found no free port in {self.PORT_ATTEMPTS} tries")

    def stop(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None

    def __enter__(self) -> DistributionRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def containerd_namespace(name: str) -> str:
    """A valid containerd namespace for a temp dir's ``name``, as unique as the name.

    containerd takes ``[A-Za-z0-9]+`` runs joined by single ``.``, ``_`` or ``-``, at most
    76 characters. ``mkdtemp`` names draw from letters, digits and ``_``, so about one in
    17 (``gpd-_x...``, ``gpd-a__b...``, a trailing ``_``) was refused and dockerd did not
    start. Hex of the name is always valid and keeps distinct names distinct.

    >>> containerd_namespace("gpd-ab_")
    'gpd6770642d61625f'
    """
    namespace = "gpd" + name.encode().hex()
    if len(namespace) > CONTAINERD_NAMESPACE_MAX:
        raise ValueError(f"name too long for a containerd namespace: {name!r}")
    return namespace


class Dockerd:
    """A private ``dockerd`` (with its own managed containerd) under a short /tmp dir.

    ``cli(*args)`` runs the docker CLI against it with an empty ``DOCKER_CONFIG``;
    ``client`` is a ``docker.DockerClient``. Everything is removed by ``stop()``.
    """

    def __init__(
        self, *, extra_args: Sequence[str] = (), config: Mapping[str, Any] | None = None
    ) -> None:
        """``config``: the daemon.json to start with (empty by default)."""
        # Unix socket paths must stay under 108 bytes, containerd's included
        # (EXEC_ROOT/containerd/containerd.sock), so not under pytest's deep tmp dirs.
        self.base = Path(tempfile.mkdtemp(prefix="gpd-", dir="/tmp"))
        self.socket = self.base / "d.sock"
        self.host = f"unix://{self.socket}"
        self.extra_args = list(extra_args)
        self.config = dict(config or {})
        self._daemon: _Daemon | None = None
        self._client: docker.DockerClient | None = None

    def command(self) -> list[str]:
        base, namespace = self.base, containerd_namespace(self.base.name)
        (base / "daemon.json").write_text(json.dumps(self.config))
        return [
            require_binary("dockerd"),
            # Our own (empty) config file: flags that repeat a host daemon.json key
            # make dockerd refuse to start.
            f"--config-file={base / 'daemon.json'}",
            f"--data-root={base / 'data'}",
            f"--exec-root={base / 'exec'}",
            f"--pidfile={base / 'dockerd.pid'}",
            f"--host={self.host}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--storage-driver=vfs",
            # If a system containerd is running dockerd uses it instead of starting its
            # own; private namespaces keep our state apart from the host's engine.
            f"--containerd-namespace={namespace}",
            f"--containerd-plugins-namespace={namespace}-plugins",
            *self.extra_args,
        ]

    def start(self) -> Dockerd:
        require_binary("docker")
        self._daemon = _Daemon("dockerd", self.command(), self.base / "dockerd.log")
        try:
            self._daemon.wait_until(
                lambda: self.socket.exists() and _http_ok("http://d/_ping", str(self.socket))
            )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=int(COMMAND_TIMEOUT))
        return self._client

    def cli(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        env = {"DOCKER_CONFIG": str(self.base / "cli-config"), "DOCKER_CONTEXT": "default"}
        return run([require_binary("docker"), "--host", self.host, *args], timeout=timeout, env=env)

    def push(self, ref: str) -> str:
        """``docker push ref``: the manifest digest docker says it pushed."""
        out = self.cli("push", ref).stdout
        found = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
        assert found is not None, f"docker push printed no digest: {out}"
        return found[1]

    def repo_digests(self, ref: str) -> list[str]:
        out = self.cli("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
        digests: list[str] = json.loads(out)
        return digests

    def remove_all_images(self) -> None:
        """Forget every image so that the next pull is cold (the daemon is session-wide)."""
        ids = self.cli("image", "ls", "--all", "--quiet").stdout.split()
        if ids:
            self.cli("image", "rm", "--force", *sorted(set(ids)))

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._daemon is not None:
            self._daemon.stop()
            self._daemon = None
        self._kill_orphaned_containerd()
        _unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_orphaned_containerd(self) -> None:
        # dockerd stops its containerd on a clean exit; after a SIGKILL it may not.
        pidfile = self.base / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            if str(self.base).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _unmount_under(base: Path) -> None:
    # dockerd bind-mounts its data root (and netns files under the exec root) and a
    # killed daemon leaves them behind; rmtree would fail on a busy mount point.
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    points = [line.split()[4] for line in mountinfo]
    for point in sorted((p for p in points if p.startswith(f"{base}/")), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


class _ContainersTool:
    """Shared set-up for skopeo and podman: permissive policy, empty registries.conf,
    auth and storage configuration of our own, temp files under ``workdir``."""

    binary = ""
    # subcommand -> flags inserted right after it
    subcommand_flags: Mapping[str, Sequence[str]] = {}

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps(PERMISSIVE_POLICY))
        (workdir / "registries.conf").write_text("unqualified-search-registries = []\n")
        # podman insists that an auth file named by REGISTRY_AUTH_FILE exists.
        (workdir / "auth.json").write_text('{"auths": {}}')
        self.env = {
            "CONTAINERS_REGISTRIES_CONF": str(workdir / "registries.conf"),
            "REGISTRY_AUTH_FILE": str(workdir / "auth.json"),
            "DOCKER_CONFIG": str(workdir / "docker-config"),
            "TMPDIR": str(self.tmpdir),
        }

    def global_flags(self) -> list[str]:
        return []

    def __call__(
        self, *args: str, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        cmd = [require_binary(self.binary), *self.global_flags(), *self._with_flags(args)]
        return run(cmd, timeout=timeout, env=self.env)

    def _with_flags(self, args: Sequence[str]) -> list[str]:
        # The subcommand is the first or second word ("pull", "image pull", "manifest push").
        for i, word in enumerate(args[:2]):
            if word.startswith("-"):
                break
            if word in self.subcommand_flags:
                return [*args[: i + 1], *self.subcommand_flags[word], *args[i + 1 :]]
        return list(args)


class Skopeo(_ContainersTool):
    """``skopeo`` with TLS verification off for registries and a permissive policy."""

    binary = "skopeo"
    subcommand_flags: Mapping[str, Sequence[str]] = {
        "copy": ["--src-tls-verify=false", "--dest-tls-verify=false"],
        "sync": ["--src-tls-verify=false", "--dest-tls-verify=false"],
        "inspect": ["--tls-verify=false"],
        "delete": ["--tls-verify=false"],
        "list-tags": ["--tls-verify=false"],
        "login": ["--tls-verify=false"],
    }

    def global_flags(self) -> list[str]:
        return [f"--policy={self.policy}", f"--tmpdir={self.tmpdir}"]

    def inspect(self, ref: str, *args: str) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self("inspect", *args, ref).stdout)
        return info


class Podman(_ContainersTool):
    """``podman`` as root without systemd: vfs storage and temp files under ``workdir``,
    run state under a short /tmp dir that ``close()`` removes."""

    binary = "podman"
    subcommand_flags: Mapping[str, Sequence[str]] = {
        "pull": ["--tls-verify=false"],
        "push": ["--tls-verify=false"],
        "login": ["--tls-verify=false"],
        "search": ["--tls-verify=false"],
    }

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        # podman refuses a runroot longer than 50 characters.
        self.runroot = Path(tempfile.mkdtemp(prefix="gpp-", dir="/tmp"))
        self.root = workdir / "root"
        storage_conf = workdir / "storage.conf"
        storage_conf.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        self.env["CONTAINERS_STORAGE_CONF"] = str(storage_conf)
        # podman's policy file is a (hidden) per-command flag, not a global one.
        policy = [f"--signature-policy={self.policy}"]
        self.subcommand_flags = {
            name: [*flags, *policy] if name in ("pull", "push") else flags
            for name, flags in type(self).subcommand_flags.items()
        }

    def global_flags(self) -> list[str]:
        w = self.workdir
        return [
            f"--root={self.root}",
            f"--runroot={self.runroot}",
            f"--tmpdir={w / 'libpod'}",
            f"--network-config-dir={w / 'net'}",
            f"--volumepath={w / 'volumes'}",
            "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ]

    def image_digest(self, ref: str) -> str:
        return self("image", "inspect", "--format", "{{.Digest}}", ref).stdout.strip()

    def close(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
