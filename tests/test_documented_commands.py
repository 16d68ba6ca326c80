"""Every command the documentation tells a user to copy runs, or says it is an example.

``testkit.doccommands`` finds the commands (shell blocks of README.md and deploy/**.md,
command lines in the comment headers of the Dockerfile and deploy/ files). A test runs
one by asking ``documented(FILE, PREFIX)`` for its text; the first test here finds those
calls in the test sources and fails on a command no test asks for and no marker excuses
(or on a call whose command is gone). The rest run the commands that need no container:
the container ones (``docker run``, the compose service, the image build) are in
``test_container_image.py``, on the image the session builds once.

docker compose is not on this machine (Debian 12 has only the old Python
``docker-compose`` 1.x, which predates the file's top-level ``name``): the compose file
is validated against the Compose Specification's JSON schema (check-jsonschema's copy,
offline) and its service is run as a container with what the file says.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.cli import _parser
from proxy.config import ConfigError, load_settings
from proxy.upstream.gcp import GoogleTokenSource
from testkit.doccommands import EXAMPLE, REPO, SYNOPSIS, DocCommand, all_commands, documented
from testkit.fakes.gar import FakeGAR
from testkit.fakes.google import FakeOAuth
from testkit.images import build_image, make_layer
from testkit.proxyharness import RunningProxy
from testkit.proxyprocess import proxy_env
from tests.conftest import ProxyFactory

DEPLOY = REPO / "deploy"
_LISTENING = re.compile(r"gar-proxy listening on (http://127\.0\.0\.1:\d+)")


def _claims() -> set[tuple[str, str]]:
    """Every ``documented("FILE", "PREFIX")`` call with literal arguments in tests/."""
    found = set()
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "documented"
                and len(node.args) == 2
                and all(isinstance(a, ast.Constant) for a in node.args)
            ):
                file, prefix = (a.value for a in node.args)  # type: ignore[attr-defined]
                found.add((file, prefix))
    return found


def test_every_documented_command_is_run_by_a_test_or_marked_as_an_example() -> None:
    commands = all_commands()
    claims = _claims()
    assert len(commands) >= 30 and len(claims) >= 8  # the finders found them at all
    unclaimed = [
        f"{c.file}:{c.line}: {c.text}"
        for c in commands
        if c.marker is None and not any(c.file == f and c.text.startswith(p) for f, p in claims)
    ]
    assert unclaimed == [], f"run these in a test, or mark them '{EXAMPLE}'"
    stale = [
        claim for claim in claims
        if not any(c.file == claim[0] and c.text.startswith(claim[1]) for c in commands)
    ]  # fmt: skip
    assert stale == [], "tests ask for commands the documents no longer have"


def _synopsis() -> list[DocCommand]:
    return [c for c in all_commands() if c.marker == SYNOPSIS]


def test_the_readme_synopsis_matches_the_cli() -> None:
    """Each line names a subcommand the CLI has, and only options it takes."""
    commands = _synopsis()
    assert len(commands) >= 10
    action = next(a for a in _parser()._actions if a.dest == "command")
    assert isinstance(action, argparse._SubParsersAction)
    choices: dict[str, argparse.ArgumentParser] = action.choices
    for command in commands:
        words = command.text.split()
        assert words[0] == "gar-proxy", command
        sub = choices[words[1]]  # KeyError: a subcommand the CLI does not have
        known = {s for action in sub._actions for s in action.option_strings}
        used = set(re.findall(r"(--[a-z][a-z-]*)", command.text))
        assert used <= known, f"{command.text}: {sorted(used - known)} not in {words[1]} --help"
    assert {c.text.split()[1] for c in commands} == set(choices), "subcommands missing"


def test_the_readme_test_command_is_what_ci_runs() -> None:
    command = documented("README.md", "bash scripts/test.sh")
    assert f"exec {command}" in (REPO / ".ci" / "run").read_text().splitlines()


@contextlib.contextmanager
def _serving(command: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    """A documented ``serve`` command as a process; yields its URL once it listens."""
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # the line comes once uvicorn listens; bounded
            found = _LISTENING.search(log.read_text())
            if found or process.poll() is not None:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.05)
        assert found, log.read_text()
        yield found[1]
    finally:
        process.send_signal(signal.SIGTERM)  # by its PID: only the process this test started
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _gar_proxy(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "gar-proxy"
    return [str(Path(sys.executable).parent / "gar-proxy"), *words[1:]]


def test_the_tier_command_runs_in_front_of_another_gar_proxy(
    proxy: ProxyFactory, tmp_path: Path
) -> None:
    fake = FakeGAR(auth="none")
    image = build_image([make_layer({"tier": b"up"})])
    fake.put_image("us", "proj/repo/app", "1", image)
    command = documented("README.md", "gar-proxy --upstream http://team-cache:5000")
    with fake.serve():
        team: RunningProxy = proxy(fake.upstream)  # the team cache the command names
        words = _gar_proxy(command.replace("http://team-cache:5000", team.url))
        env = proxy_env(
            tmp_path / "cache",
            {
                "GAR_PROXY_SERVER_LISTEN": "127.0.0.1:0",
                "GAR_PROXY_CACHE_DIR": str(tmp_path / "cache"),
            },
        )
        with _serving(words, env, tmp_path / "tier.log") as url:
            blob = image.blobs[0]
            answer = httpx.get(f"{url}/v2/proj/repo/app/blobs/{blob.digest}", timeout=30)
    assert answer.status_code == 200 and answer.content == blob.data
    assert fake.count("GET", "blob") == 1  # through the team cache to its upstream


# ---------------------------------------------------------------- CI recipes


def _gitlab() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "ci" / "gitlab-ci.yml").read_text())
    return document


def test_the_gitlab_service_starts_with_the_variables_gitlab_hands_it() -> None:
    """GitLab passes every CI/CD variable to service containers as well as the service's
    own ``variables``: none may collide with gar-proxy's reserved ``GAR_PROXY_`` prefix.
    (``GAR_PROXY_KEY``, the old name, stopped start-up: it names no setting.)"""
    (service,) = _gitlab()["build"]["services"]
    own: dict[str, str] = service["variables"]
    referenced = {m for v in own.values() for m in re.findall(r"\$\{?(\w+)", str(v))}
    assert referenced, "the recipe's service takes a CI/CD variable"
    key = json.dumps({"type": "service_account", "note": "a stand-in key"})
    env = {name: key for name in referenced}  # the CI/CD variables themselves
    env.update({k: re.sub(r"\$\{?(\w+)\}?", lambda m: env[m[1]], str(v)) for k, v in own.items()})
    env.update({"CI": "true", "CI_JOB_ID": "1", "GITLAB_CI": "true"})
    # The image's own listen, only parsed here (nothing binds): inside the service
    # container it is that container's network namespace.
    env["GAR_PROXY_SERVER_LISTEN"] = "0.0.0.0:5000"
    try:
        settings = load_settings(None, env=env)
    except ConfigError as error:
        pytest.fail(f"gar-proxy would not start as a GitLab service: {error}")
    assert settings.gcp.service_account_key == key
    assert settings.access.anonymous


def test_the_gitlab_job_image_can_run_a_script() -> None:
    # quay.io/skopeo/stable's ENTRYPOINT is skopeo: GitLab's shell script would be
    # handed to skopeo as arguments unless the entrypoint is reset.
    image = _gitlab()["build"]["image"]
    assert image["name"].startswith("quay.io/skopeo/stable") and image["entrypoint"] == [""]


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.gitlab-ci", "ci/gitlab-ci.yml"),
        ("vendor.github-workflows", "ci/github-actions.yml"),
        ("vendor.compose-spec", "compose/compose.yaml"),
    ],
)
def test_recipes_pass_their_platforms_schema(schema: str, path: str) -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", schema, str(DEPLOY / path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- systemd


def _unit_environment(unit: Path, credentials: Path, cache: Path) -> dict[str, str]:
    """The unit's Environment= lines with its specifiers filled in as systemd would."""
    env = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value.replace("%d", str(credentials)).replace("%C", str(cache))
    return env


def test_the_systemd_unit_signs_in_with_gcloud_adc_handed_over_as_its_credential(
    tmp_path: Path,
) -> None:
    """What the unit says to do with ``gcloud auth application-default login``'s file:
    hand it over by LoadCredential= like a key. With the unit's own environment and no
    home directory (DynamicUser, ProtectHome=yes), gar-proxy finds it there and signs in.
    (In-process: google-auth pins a gcloud login's token endpoint to Google's, so only a
    ``token_uri`` given to the token source reaches the fake.)"""
    unit = DEPLOY / "systemd" / "gar-proxy.service"
    (name, source), *_ = [
        line.removeprefix("LoadCredential=").split(":", 1)
        for line in unit.read_text().splitlines() if line.startswith("LoadCredential=")
    ]  # fmt: skip
    assert source == "/etc/gar-proxy/key.json"
    credentials = tmp_path / "credentials"  # what systemd makes of LoadCredential=
    credentials.mkdir()
    env = {"HOME": str(tmp_path / "no-home")}  # the default ADC path is out of reach
    env |= _unit_environment(unit, credentials, tmp_path / "cache")
    settings = load_settings(None, env=env)
    assert settings.server.listen == ("127.0.0.1", 5000)
    assert settings.cache.dir == tmp_path / "cache" / "gar-proxy"

    async def sign_in(token_uri: str) -> tuple[str, str]:
        tokens = GoogleTokenSource(settings.gcp, token_uri=token_uri)
        try:
            return await tokens.token(), tokens.source
        finally:
            await tokens.aclose()

    oauth = FakeOAuth()
    with oauth.serving():
        user = oauth.authorized_user()  # as gcloud writes it
        (credentials / name).write_text(json.dumps(user))
        token, found = asyncio.run(sign_in(oauth.token_uri))
    assert found == f"key file {credentials / name}"
    assert oauth.issued[token].subject == user["client_id"]
