"""Images named in YAML: Kubernetes manifests (rendered Helm output included), Compose
files, GitHub Actions workflows and actions, GitLab CI files.

Each document of a file is recognised by its shape:

- **Kubernetes** (``apiVersion`` and ``kind``): the pod spec of a Pod, PodTemplate,
  Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
  CronJob (any other kind with ``spec.template.spec``, such as an Argo Rollout, too);
  ``containers``, ``initContainers``, ``ephemeralContainers``; ``List`` kinds by item.
- **GitHub Actions** (``jobs`` and ``on``): ``jobs.*.container`` (a string or its
  ``image``), ``jobs.*.services.*.image``, steps' ``uses: docker://IMAGE``; an action
  (``runs.image: docker://IMAGE``). ``${{ ... }}`` is known only when it runs.
- **Compose** (``services`` a mapping of services): ``services.*.image``, with
  ``${VAR}`` from the process environment over the ``.env`` beside the file (or over
  the ``--env-file``s instead), as Compose ranks them (``envfile.py``).
- **GitLab CI** (``.gitlab-ci.yml``, or its keywords): ``image`` (a string or its
  ``name``) and ``services`` at the top, in ``default`` and in each job, with ``$VAR``
  from the file's ``variables``.

Any other YAML (Helm values, configuration) has no images; a file that is not YAML
(an unrendered Helm template) is a ``Problem``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from proxy.imagefiles.envfile import compose_values
from proxy.imagefiles.found import Found, Problem
from proxy.imagefiles.refs import Unresolved
from proxy.imagefiles.variables import Inputs, expand

Item = Found | Problem
POD_SPECS = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    **{
        kind: ("spec", "template", "spec")
        for kind in (
            "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job",
        )
    },
}  # fmt: skip
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
GITLAB_KEYWORDS = frozenset(
    ("stages", "variables", "include", "workflow", "default", "image", "services", "cache",
     "before_script", "after_script")
)  # fmt: skip
MAX_LIST_DEPTH = 8  # List kinds in Lists


def _dig(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document


def _image(text: Any, where: str, values: Mapping[str, str] | None = None) -> Item | None:
    """A found image, or the problem with it; None where the file names none."""
    if text is None:
        return None
    if not isinstance(text, str) or not text.strip():
        return Problem(repr(text), where, "not an image reference")
    if "${{" in text:
        return Problem(text, where, "a GitHub Actions expression: known only when the job runs")
    if values is not None and "$" in text:
        try:
            return Found(expand(text, values), where)
        except Unresolved as error:
            return Problem(text, where, str(error))
    return Found(text.strip(), where)


# ------------------------------------------------------------------ Kubernetes


def kubernetes(document: Mapping[str, Any], where: str, depth: int = 0) -> Iterator[Item]:
    kind = str(document.get("kind", ""))
    name = _dig(document, ("metadata", "name")) or "?"
    if kind.endswith("List") and isinstance(document.get("items"), list):
        for number, item in enumerate(document["items"]):
            if isinstance(item, Mapping) and depth < MAX_LIST_DEPTH:
                yield from kubernetes(item, f"{where} items[{number}]", depth + 1)
        return
    spec = _dig(document, POD_SPECS.get(kind, ("spec", "template", "spec")))
    if not isinstance(spec, Mapping):
        return
    for field in CONTAINER_LISTS:
        containers = spec.get(field)
        for number, container in enumerate(containers if isinstance(containers, list) else []):
            if isinstance(container, Mapping) and "image" in container:
                label = container.get("name") or number
                found = _image(container["image"], f"{where}: {kind}/{name} {field} {label}")
                if found is not None:
                    yield found


# ------------------------------------------------------------------ GitHub Actions


def github(document: Mapping[str, Any], where: str) -> Iterator[Item]:
    runs = document.get("runs")
    if isinstance(runs, Mapping):  # an action.yml
        image = runs.get("image")
        if isinstance(image, str) and image.startswith("docker://"):
            yield Found(image.removeprefix("docker://"), f"{where}: runs.image")
    jobs = document.get("jobs")
    for job_name, job in jobs.items() if isinstance(jobs, Mapping) else []:
        if not isinstance(job, Mapping):
            continue
        at = f"{where}: jobs.{job_name}"
        container = job.get("container")
        if isinstance(container, Mapping):
            container = container.get("image")
        if (found := _image(container, f"{at}.container")) is not None:
            yield found
        services = job.get("services")
        for service_name, service in services.items() if isinstance(services, Mapping) else []:
            image = service.get("image") if isinstance(service, Mapping) else service
            if (found := _image(image, f"{at}.services.{service_name}")) is not None:
                yield found
        steps = job.get("steps")
        for number, step in enumerate(steps if isinstance(steps, list) else []):
            uses = step.get("uses") if isinstance(step, Mapping) else None
            if isinstance(uses, str) and uses.startswith("docker://"):
                image = uses.removeprefix("docker://")
                if (found := _image(image, f"{at}.steps[{number}]")) is not None:
                    yield found


# ------------------------------------------------------------------ Compose


def compose(document: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Iterator[Item]:
    for name, service in document["services"].items():
        image = service.get("image") if isinstance(service, Mapping) else None
        found = _image(image, f"{where}: services.{name}", env)
        if isinstance(found, Problem) and "is not set" in found.reason:
            found = replace(found, reason=f"{found.reason} (in the environment or env file)")
        if found is not None:
            yield found


# ------------------------------------------------------------------ GitLab CI


def _variables(table: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in table.items() if isinstance(table, Mapping) else []:
        value = value.get("value") if isinstance(value, Mapping) else value
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            found[str(key)] = str(value)
    return found


def _gitlab_images(section: Mapping[str, Any], at: str, values: dict[str, str]) -> Iterator[Item]:
    image = section.get("image")
    if isinstance(image, Mapping):
        image = image.get("name")
    if (found := _gitlab_image(image, f"{at}image", values)) is not None:
        yield found
    services = section.get("services")
    for number, service in enumerate(services if isinstance(services, list) else []):
        if isinstance(service, Mapping):
            service = service.get("name")
        if (found := _gitlab_image(service, f"{at}services[{number}]", values)) is not None:
            yield found


def _gitlab_image(text: Any, where: str, values: dict[str, str]) -> Item | None:
    if not isinstance(text, str) or "$" not in text:
        return _image(text, where)
    try:
        return Found(expand(text, values, defaults=False), where)
    except Unresolved as error:
        return Problem(text, where, f"{error}: a CI/CD variable the file does not define")


def gitlab(document: Mapping[str, Any], where: str) -> Iterator[Item]:
    values = _variables(document.get("variables"))
    yield from _gitlab_images(document, f"{where}: ", values)
    default = document.get("default")
    if isinstance(default, Mapping):
        yield from _gitlab_images(default, f"{where}: default.", values)
    for name, job in document.items():
        if name in GITLAB_KEYWORDS or not isinstance(job, Mapping):
            continue
        job_values = {**values, **_variables(job.get("variables"))}
        yield from _gitlab_images(job, f"{where}: {name}.", job_values)


def _is_github(document: Mapping[str, Any]) -> bool:
    """A workflow (``jobs`` and ``on``, which YAML 1.1 reads as the key True) or an
    action (``runs.using``)."""
    keys: set[Any] = set(document)
    if isinstance(document.get("jobs"), Mapping) and ("on" in keys or True in keys):
        return True
    runs = document.get("runs")
    return isinstance(runs, Mapping) and "using" in runs


def _is_gitlab(document: Mapping[str, Any], path: Path) -> bool:
    if path.name.endswith(".gitlab-ci.yml") or path.name.endswith(".gitlab-ci.yaml"):
        return True
    jobs = [v for k, v in document.items() if k not in GITLAB_KEYWORDS]
    has_job = any(isinstance(j, Mapping) and ("script" in j or "trigger" in j) for j in jobs)
    return has_job or bool(GITLAB_KEYWORDS & {"stages", "include", "workflow"} & set(document))


# ------------------------------------------------------------------ dispatch


def document_images(document: Any, where: str, path: Path, inputs: Inputs) -> Iterator[Item]:
    if not isinstance(document, Mapping):
        return
    if "apiVersion" in document and "kind" in document:
        yield from kubernetes(document, where)
    elif _is_github(document):
        yield from github(document, where)
    elif isinstance(document.get("services"), Mapping):
        values = compose_values(path, inputs.environ, inputs.env_files)
        yield from compose(document, where, values)
    elif _is_gitlab(document, path):
        yield from gitlab(document, where)


def yaml_images(text: str, path: Path, inputs: Inputs | None = None) -> list[Item]:
    """Every document of a YAML file; a file that is not YAML is one ``Problem``."""
    found: list[Item] = []
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        return [Problem(str(path), str(path), f"not YAML{at}: an unrendered template?")]
    for number, document in enumerate(documents):
        where = str(path) if len(documents) == 1 else f"{path}#{number + 1}"
        found += document_images(document, where, path, inputs or Inputs())
    return found
