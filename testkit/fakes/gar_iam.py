"""Who may do what on the fake GAR: principals, IAM before existence, OAuth scopes.

Real GAR checks IAM before it looks the repository up (docs/GAR.md A5, A7, A8): a
principal whose grants are on some repositories only gets **403** ``Permission
"artifactregistry.repositories.downloadArtifacts" denied on resource "projects/P/
locations/L/repositories/R" (or it may not exist)`` for any repository it cannot see,
existing or not; a principal with a project-wide role gets **404** ``Repository "R"
not found`` for one that does not exist. ``Principal`` models both::

    fake.grant(TOKEN, Principal.project_wide("proj", write=True))
    fake.grant(SCOPED, Principal.on_repositories(("us", "proj", "repo")))

A token with no principal of its own acts as an owner of every project (what most
tests want); ``read_only_tokens`` act as project-wide readers of every project.

Scopes (GAR.md R6): a token's OAuth scopes, when the fake is told them
(``token_scopes``), limit it as Google does: the Artifact Registry REST read methods
take ``cloud-platform`` or ``cloud-platform.read-only``, writes ``cloud-platform``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from testkit.fakes.gar_model import _ApiError

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
CLOUD_PLATFORM_READ_ONLY = "https://www.googleapis.com/auth/cloud-platform.read-only"
DOWNLOAD = "artifactregistry.repositories.downloadArtifacts"
UPLOAD = "artifactregistry.repositories.uploadArtifacts"
GET = "artifactregistry.repositories.get"
LIST = "artifactregistry.repositories.list"
LOCATIONS = "artifactregistry.locations.list"  # the name is our assumption (GAR.md R4)
READ, WRITE = "read", "write"
ANY = "*"

RepositoryKey = tuple[str, str, str]  # (location, project, repository)
Scopes = Callable[[str], Iterable[str] | None]


@dataclass(frozen=True)
class Principal:
    """An identity's grants: project-wide (``projects``: project or ``*`` -> actions) or
    on single repositories (``repositories``: (location, project, repo) -> actions).
    ``write`` implies ``read``, as roles/artifactregistry.writer includes the reader's."""

    name: str
    projects: Mapping[str, frozenset[str]] = field(default_factory=dict)
    repositories: Mapping[RepositoryKey, frozenset[str]] = field(default_factory=dict)
    # IAM deny policies (https://cloud.google.com/iam/docs/deny-overview): refused here
    # whatever the grants say.
    denied: frozenset[RepositoryKey] = frozenset()

    @classmethod
    def owner(cls) -> Principal:
        return cls("owner", {ANY: frozenset({READ, WRITE})})

    @classmethod
    def project_wide(cls, project: str = ANY, *, write: bool = False) -> Principal:
        actions = frozenset({READ, WRITE} if write else {READ})
        return cls(f"project-{'writer' if write else 'reader'}", {project: actions})

    @classmethod
    def on_repositories(cls, *keys: RepositoryKey, write: bool = False) -> Principal:
        actions = frozenset({READ, WRITE} if write else {READ})
        return cls("repository-scoped", repositories={key: actions for key in keys})

    def _actions(self, key: RepositoryKey) -> frozenset[str]:
        granted = self.projects.get(key[1], frozenset()) | self.projects.get(ANY, frozenset())
        return granted | self.repositories.get(key, frozenset())

    def may(self, key: RepositoryKey, action: str) -> bool:
        if key in self.denied:
            return False
        return action in self._actions(key) or WRITE in self._actions(key)

    def project_wide_on(self, project: str) -> bool:
        """Sees the whole project (lists it, gets 404 for what is not there)."""
        return bool(self.projects.get(project) or self.projects.get(ANY))


def resource_name(key: RepositoryKey) -> str:
    location, project, repository = key
    return f"projects/{project}/locations/{location}/repositories/{repository}"


def registry_denied(key: RepositoryKey, write: bool) -> _ApiError:
    """The registry's and the token endpoint's IAM refusal, word for word as GAR writes
    it (GAR.md A5, A7): DENIED in the OCI envelope, "(or it may not exist)"."""
    permission = UPLOAD if write else DOWNLOAD
    where = resource_name(key)
    message = f'Permission "{permission}" denied on resource "{where}" (or it may not exist)'
    return _ApiError(403, "DENIED", message)


def repository_not_found(key: RepositoryKey) -> _ApiError:
    """A project-wide principal asking for a repository that does not exist (GAR.md A8)."""
    return _ApiError(404, "NAME_UNKNOWN", f'Repository "{key[2]}" not found')


def rest_denied_message(permission: str, resource: str) -> str:
    """The REST API's IAM refusal (GAR.md R4), as gcloud prints it."""
    return (
        f"Permission '{permission}' denied on resource "
        f"'//artifactregistry.googleapis.com/{resource}' (or it may not exist)."
    )


def scope_allows(scopes: Iterable[str] | None, *, write: bool) -> bool:
    """Artifact Registry's discovery document: reads take either cloud-platform scope,
    writes the full one (GAR.md R6). ``None``: scopes not known, treated as full."""
    if scopes is None:
        return True
    granted = set(scopes)
    return CLOUD_PLATFORM in granted or (not write and CLOUD_PLATFORM_READ_ONLY in granted)
