"""Reading image references out of the files a team has (``proxy/imagefiles/``): what
each kind of file names, what is not an image (stage names, scratch, a template), and
why a reference cannot be known. Pure parsing; resolving and pulling is
``tests/test_warm_files.py``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from proxy.imagefiles import Found, Problem, scan
from proxy.imagefiles.dockerfile import dockerfile_images
from proxy.imagefiles.refs import Unresolved, normalize
from proxy.imagefiles.variables import expand
from proxy.imagefiles.yamlfiles import yaml_images
from proxy.oci.platform import Platform

DIGEST = "sha256:" + "0123456789abcdef" * 4
AMD = Platform("linux", "amd64")


def texts(items: Sequence[Found | Problem]) -> list[str]:
    return [i.text for i in items if isinstance(i, Found)]


def reasons(items: Sequence[Found | Problem]) -> dict[str, str]:
    return {i.text: i.reason for i in items if isinstance(i, Problem)}


# ------------------------------------------------------------ references


@pytest.mark.parametrize(
    ("text", "name", "reference"),
    [
        ("nginx", "docker.io/library/nginx", "latest"),
        ("nginx:1.25-alpine", "docker.io/library/nginx", "1.25-alpine"),
        ("bitnami/redis:7", "docker.io/bitnami/redis", "7"),
        ("docker.io/nginx:1", "docker.io/library/nginx", "1"),
        ("index.docker.io/library/nginx:1", "docker.io/library/nginx", "1"),
        ("ghcr.io/org/tool:2", "ghcr.io/org/tool", "2"),
        ("us-docker.pkg.dev/p/r/i:1", "us-docker.pkg.dev/p/r/i", "1"),
        (f"ghcr.io/org/tool:2@{DIGEST}", "ghcr.io/org/tool", DIGEST),  # the digest wins
        ("registry.local:5000/team/app", "registry.local:5000/team/app", "latest"),
        ("localhost:5000/proj/repo/app:1", "proj/repo/app", "1"),  # the proxy itself
        ("[::1]:5000/proj/repo/app:1", "proj/repo/app", "1"),
        ("localhost:5001/alpine:3", "docker.io/library/alpine", "3"),  # a mirror's socket
    ],
)
def test_references_are_read_as_docker_reads_them(text: str, name: str, reference: str) -> None:
    own = {"localhost:5000": "", "[::1]:5000": "", "localhost:5001": "docker.io"}
    assert normalize(text, own=own) == type(normalize("x"))(name, reference)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not an image reference"),
        ("two words", "not an image reference"),
        ("Nginx:1", "lowercase"),
        ("nginx:bad/tag", "not a valid repository name"),  # the name nginx:bad/tag
        ("nginx@sha256:short", "not a digest"),
        ("nginx:-1", "not a tag"),
    ],
)
def test_bad_references_say_why(text: str, reason: str) -> None:
    with pytest.raises(Unresolved, match=reason):
        normalize(text)


def test_substitution_forms() -> None:
    values = {"SET": "x", "EMPTY": ""}
    assert expand("${SET:-d}${EMPTY:-d}${GONE:-d}", values) == "xdd"
    assert expand("${EMPTY-d}${GONE-d}", values) == "d"  # set but empty stays empty
    assert expand("${SET:+alt}${EMPTY:+alt}${GONE+alt}", values) == "alt"
    assert expand("$$SET and $SET", values) == "$SET and x"  # Compose's escaped dollar
    assert expand("${GONE:-${SET}}", values) == "x"
    with pytest.raises(Unresolved, match=r"\$GONE is not set"):
        expand("img:${GONE}", values)
    with pytest.raises(Unresolved, match="unsupported"):
        expand("${SET#x}", values)
    with pytest.raises(Unresolved, match="unsupported"):
        expand("${GONE:-d}", values, defaults=False)


# ------------------------------------------------------------ Dockerfiles


def test_a_multi_stage_dockerfile() -> None:
    text = (Path(__file__).parent / "data/warm_files/app/Dockerfile").read_text()
    found = dockerfile_images(text, "Dockerfile")
    assert texts(found) == ["python:3.12-slim", "python:3.12-slim", "ghcr.io/org/linter:3"]
    assert [f.line for f in found if isinstance(f, Found)] == [6, 23, 25]
    assert all(f.platform is None for f in found if isinstance(f, Found))  # $BUILDPLATFORM
    assert reasons(found) == {
        "${TOOLS_IMAGE}": "ARG TOOLS_IMAGE has no default (it is given with --build-arg)"
    }  # and the heredoc's "FROM not-an-image" is a script line, not an instruction


def test_dockerfile_platforms_continuations_escape_and_mounts() -> None:
    text = """# escape=`
ARG GO=1.22
FROM --platform=linux/arm64 golang:${GO} AS Build
FROM --platform=$TARGETPLATFORM `
     registry.local/base-${TARGETARCH}:1 AS final
from build
RUN --mount=type=cache,target=/root/.cache,from=registry.local/cache:1 `
    --mount=type=bind,from=build,target=/src go build
COPY --from=0 /a /b
COPY --from=alpine AS /etc/x /etc/x
FROM alpine AS alpine
FROM alpine:${NOT_DECLARED}
FROM --platform=weird debian:12
ARG LATE=1
FROM busybox:${LATE}
"""
    found = dockerfile_images(text, "Dockerfile", AMD)
    assert [(f.text, f.platform) for f in found if isinstance(f, Found)] == [
        ("golang:1.22", "linux/arm64"),
        ("registry.local/base-amd64:1", None),  # the warmed platform's arch
        ("registry.local/cache:1", None),
        ("alpine", None),  # COPY --from an image
        ("alpine", None),  # an image, though the stage takes its name
    ]
    assert reasons(found) == {
        "alpine:${NOT_DECLARED}": "$NOT_DECLARED is not an ARG declared before the first FROM",
        "debian:12": "platform 'weird' is not os/arch[/variant]",
        "busybox:${LATE}": "$LATE is not an ARG declared before the first FROM",
    }


# ------------------------------------------------------------ YAML


def test_kubernetes_kinds_lists_and_every_container_list(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(f"""
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {{name: debug}}
    spec:
      containers: [{{name: a, image: "app:1"}}]
      ephemeralContainers: [{{name: dbg, image: "busybox:1.36"}}]
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {{name: db}}
    spec:
      template:
        spec:
          initContainers: [{{name: init, image: "alpine:3@{DIGEST}"}}]
          containers: [{{name: db, image: "postgres:16"}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent}}
spec: {{template: {{spec: {{containers: [{{name: a, image: "agent:2"}}]}}}}}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: canary}}
spec: {{template: {{spec: {{containers: [{{name: c, image: "canary:3"}}]}}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: config}}
data: {{image: "not-a-container:1"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: empty}}
spec: {{containers: [{{name: x, image: ""}}]}}
""")
    found = yaml_images(path.read_text(), path)
    assert texts(found) == [
        "app:1", "busybox:1.36", f"alpine:3@{DIGEST}", "postgres:16", "agent:2", "canary:3",
    ]  # fmt: skip
    assert list(reasons(found).values()) == ["not an image reference"]


def test_gitlab_ci_images_services_defaults_and_variables(tmp_path: Path) -> None:
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text("""
image: python:3.12
variables:
  TOOLS: registry.gitlab.com/team/tools
  DIND: {value: "docker:27-dind", description: the daemon}
default:
  services: [{name: "$DIND", alias: docker}]
stages: [test, deploy]
.template:
  image: {name: "$TOOLS:1", entrypoint: [""]}
test:
  stage: test
  services: ["postgres:16", "redis:7"]
  script: [pytest]
deploy:
  image: $CI_REGISTRY_IMAGE/deployer:latest
  variables: {TOOLS: "ghcr.io/team/other"}
  script: [deploy]
""")
    found = yaml_images(path.read_text(), path)
    assert texts(found) == [
        "python:3.12", "docker:27-dind", "registry.gitlab.com/team/tools:1", "postgres:16",
        "redis:7",
    ]  # fmt: skip
    assert reasons(found) == {
        "$CI_REGISTRY_IMAGE/deployer:latest": "$CI_REGISTRY_IMAGE is not set and has no default:"
        " a CI/CD variable the file does not define"
    }


def test_compose_reads_dotenv_and_github_actions(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('export TAG="7.2"\n# comment\nEMPTY=\n')
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("""
services:
  cache: {image: "redis:${TAG}"}
  web: {image: "web:${WEB_TAG-latest}", build: .}
  price: {image: "app:$${NOT_A_VARIABLE}"}
  worker: {image: "worker:${EMPTY:?set EMPTY}"}
  only-build: {build: ./svc}
""")
    action = tmp_path / "action.yml"
    action.write_text("runs:\n  using: docker\n  image: docker://ghcr.io/org/action:1\n")
    found = scan([tmp_path])
    assert [f.text for f in found.found] == [
        "ghcr.io/org/action:1", "redis:7.2", "web:latest", "app:${NOT_A_VARIABLE}",
    ]  # fmt: skip
    assert reasons(found.problems) == {  # :? refuses an empty value, as Compose does
        "worker:${EMPTY:?set EMPTY}": "required variable EMPTY is missing a value: set EMPTY"
    }
    assert found.files == 2


def test_a_directory_walk_skips_what_is_not_an_image_file(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "bad.yaml").write_text("kind: Pod\napiVersion: v1\nspec: {}\n")
    (tmp_path / "notes.txt").write_text("FROM nothing\n")
    (tmp_path / "values.yaml").write_text("image: {repository: app, tag: '1'}\n")
    (tmp_path / "Containerfile.dev").write_text("FROM fedora:40\n")
    (tmp_path / "broken.yaml").write_text("key: [unclosed\n")
    found = scan([tmp_path, tmp_path / "missing.yaml"])
    assert [f.text for f in found.found] == ["fedora:40"]
    assert [p.reason.split(" (")[0] for p in found.problems] == [
        "not YAML", "no such file or directory",
    ]  # fmt: skip
