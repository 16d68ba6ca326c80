"""``gar-proxy vulns | sbom | cleanup-preview | where`` against the fake GAR and a fake
Container Analysis, run as the CLI runs (``proxy.cli.main``), output read back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.commands.reports import table
from tests.gar.gatekit import Upstreams, upstreams
from tests.gar.test_sbom import SPDX

REPO = "proj/repo/app"
Cli = Callable[..., tuple[int, str, str]]  # cli(*args) -> (exit status, stdout, stderr)


@pytest.fixture
def up() -> Iterator[Upstreams]:
    with upstreams() as served:
        yield served


@pytest.fixture
def cli(
    up: Upstreams,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Cli]:
    for name, value in {
        "HOME": str(tmp_path / "home"),
        "GAR_PROXY_APIS_CONTAINER_ANALYSIS": up.url,
        "GAR_PROXY_APIS_CLOUD_STORAGE": up.url + "/storage",
        "GAR_PROXY_APIS_ARTIFACT_REGISTRY": up.url,
        "GAR_PROXY_ROUTING_RESOLVE_LOCATIONS": "false",
    }.items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str, str]:
        base = ["--upstream", up.upstream, "--auth", "none", "--cache-dir", str(tmp_path / "c")]
        status = main([*base, *args])
        out, err = capsys.readouterr()
        return status, out, err

    yield run


@pytest.mark.parametrize(
    ("severities", "fails"),
    [((), False), (("LOW", "MEDIUM"), False), (("HIGH",), True), (("MEDIUM", "CRITICAL"), True)],
)
def test_vulns_fail_on_high_exits_non_zero_exactly_when_high_or_worse_exists(
    up: Upstreams, cli: Cli, severities: tuple[str, ...], fails: bool
) -> None:
    image = up.image(REPO, "v1", "-".join(severities) or "clean")
    url = up.resource_url(REPO, image.digest)
    up.analysis.set_discovery(url, "FINISHED_SUCCESS")
    for number, severity in enumerate(severities):
        up.analysis.add_vulnerability(url, f"CVE-2024-{number}", severity, "pkg", "1.0", "1.1", 5.0)
    status, out, err = cli("vulns", f"{REPO}:v1", "--fail-on", "high")
    assert status == (1 if fails else 0), err
    assert f"image  us-docker.pkg.dev/{REPO}@{image.digest}" in out  # the tag resolved
    assert "scan   finished" in out
    for number, severity in enumerate(severities):
        assert f"CVE-2024-{number}  {severity}" in out


def test_vulns_json_and_an_unknown_image(up: Upstreams, cli: Cli) -> None:
    image = up.image(REPO, "v1", "json")
    url = up.resource_url(REPO, image.digest)
    up.analysis.set_discovery(url, "SCANNING")
    status, out, _ = cli("vulns", f"{REPO}@{image.digest}", "--json")
    data = json.loads(out)
    assert status == 0 and data["scan"]["state"] == "scanning" and data["findings"] == []
    status, _, err = cli("vulns", f"{REPO}:nope", "--fail-on", "LOW")
    assert status == 2 and "nope is not known" in err


def test_sbom_formats_and_none(up: Upstreams, cli: Cli) -> None:
    image, bare = up.image(REPO, "v1", "sbom"), up.image(REPO, "bare", "bare")
    up.analysis.add_sbom(up.resource_url(REPO, image.digest), "bucket", "app.spdx.json", SPDX)
    status, out, _ = cli("sbom", f"{REPO}:v1")
    assert status == 0 and out.startswith(f"us-docker.pkg.dev/{REPO}@{image.digest}: spdx")
    assert "NAME" in out and "PURL" in out
    status, out, _ = cli("sbom", f"{REPO}:v1", "--format", "cyclonedx")
    document = json.loads(out)
    assert document["bomFormat"] == "CycloneDX" and document["components"]
    status, out, _ = cli("sbom", f"{REPO}:v1", "--format", "spdx")
    assert json.loads(out)["spdxVersion"] == "SPDX-2.3"
    status, out, _ = cli("sbom", f"{REPO}:bare", "--format", "json")
    assert status == 0 and json.loads(out)["sbom"] is None
    status, out, _ = cli("sbom", f"{REPO}:bare")
    assert status == 0 and out.strip().endswith(": no SBOM")
    assert bare.digest in out


def test_cleanup_preview_and_where(up: Upstreams, cli: Cli) -> None:
    policy = {"id": "untagged", "action": "DELETE", "condition": {"tagState": "UNTAGGED"}}
    up.gar.add_repository("europe-west1", "proj", "repo", cleanup_policies={"untagged": policy})
    for tags, digest in (([], "sha256:" + "1" * 64), (["v1"], "sha256:" + "2" * 64)):
        up.analysis.add_docker_image(
            "europe-west1", "proj", "repo", "app", digest, tags, "2026-01-01T00:00:00Z"
        )
    status, out, _ = cli("cleanup-preview", "proj/europe-west1/repo", "--json")
    data = json.loads(out)
    assert status == 0 and [r["digest"][-1] for r in data["delete"]] == ["1"]
    assert [r["decided_by"] for r in data["delete"]] == ["untagged"]
    status, out, _ = cli("cleanup-preview", "proj/europe-west1/repo")
    assert "1 to delete, 1 kept (preview only)" in out and "DELETE  app" in out
    up.gar.repositories[("europe-west1", "proj", "repo")].cleanup_policy_dry_run = True
    status, out, _ = cli("cleanup-preview", "proj/europe-west1/repo")
    assert "policies are in dry run: GAR only logs deletions" in out
    status, _, err = cli("cleanup-preview", "proj/us/none")
    assert status == 2 and "projects/proj/locations/us/repositories/none" in err
    status, out, _ = cli("where", "proj/repo", "--json")
    assert json.loads(out)["location"] == "us" and "default" in json.loads(out)["why"]


def test_where_names_the_api_lookup(
    up: Upstreams, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAR_PROXY_ROUTING_RESOLVE_LOCATIONS", "true")
    up.gar.add_repository("asia", "proj", "far")
    status, out, _ = cli("where", "proj/far")
    assert status == 0 and out.strip() == (
        "proj/far: asia (found by the Artifact Registry API (projects.locations.repositories.get))"
    )
    status, out, _ = cli("where", "proj/far")
    assert "remembered in the cache index" in out


def test_tables_align_columns() -> None:
    assert table(("A", "LONGER"), [("xyz", None), ("x", "1")]) == [
        "A    LONGER",
        "xyz  -",
        "x    1",
    ]
