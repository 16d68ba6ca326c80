"""Repository names, tags and image references, and GAR locations.

The proxy accepts three spellings of the same image (DESIGN.md section 2)::

    >>> Repository.parse("my-proj/my-repo/app").location is None      # resolved later
    True
    >>> Repository.parse("europe-west1-docker.pkg.dev/my-proj/my-repo/app").location
    'europe-west1'
    >>> Repository.parse("my-proj/my-repo/app", ns="asia-docker.pkg.dev").location  # containerd
    'asia'

A regional endpoint (``docker.LOCATION.rep.pkg.dev``, docs/GAR.md N6) names the same
location and keeps going to that host; a domain-scoped project ``example.com:proj`` is
written ``example.com/proj`` in image names (N5), and a GAR project id never has a dot::

    >>> repo = Repository.parse("docker.me-central2.rep.pkg.dev/example.com/proj/repo/app")
    >>> repo.location, repo.regional, repo.project, repo.repository, repo.image
    ('me-central2', True, 'example.com:proj', 'repo', 'app')
    >>> repo.resource_name
    'projects/example.com:proj/locations/me-central2/repositories/repo'

Invalid names raise ``NAME_INVALID`` before any filesystem or upstream work happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.oci.digest import Digest
from proxy.oci.errors import ErrorCode, RegistryError

# Artifact Registry locations: multi-regions first, then regions.
KNOWN_LOCATIONS: frozenset[str] = frozenset(
    (
        "us",
        "europe",
        "asia",
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-west10",
        "europe-west12",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "northamerica-south1",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
    )
)

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_GAR_HOST = re.compile(r"([a-z0-9-]+)-docker\.pkg\.dev")
_GAR_REGIONAL_HOST = re.compile(r"docker\.([a-z0-9-]+)\.rep\.pkg\.dev")
# What a location looks like ("us", "europe-west12"); whether it exists is the API's to
# say (proxy.services.repository_checks), so a region added later parses today.
_LOCATION = re.compile(r"[a-z]+(?:-[a-z]+[0-9]+)?")
# Clients limit "host/name" to 255 characters; we hold the name alone to that.
MAX_NAME_LENGTH = 255


def is_location_name(text: str) -> bool:
    return _LOCATION.fullmatch(text) is not None


def location_syntax(location: str) -> str:
    if is_location_name(location):
        return location
    raise RegistryError(
        ErrorCode.NAME_INVALID, f"{location[:64]!r} is not an Artifact Registry location"
    )


def location_of_host(host: str) -> str | None:
    """``'us-docker.pkg.dev'`` -> ``'us'``, ``'docker.us-east1.rep.pkg.dev'`` ->
    ``'us-east1'``; ``None`` for any other host."""
    endpoint = endpoint_of_host(host)
    return endpoint[0] if endpoint else None


def endpoint_of_host(host: str) -> tuple[str, bool] | None:
    """(location, regional) of a GAR registry host; ``None`` for any other host."""
    host = host.lower()
    if match := _GAR_HOST.fullmatch(host):
        return match.group(1), False
    if match := _GAR_REGIONAL_HOST.fullmatch(host):
        return match.group(1), True
    return None


def gar_host(location: str) -> str:
    return f"{location}-docker.pkg.dev"


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository path as upstream knows it (``project/repository/image...``).

    ``location`` is set when the client named it (host-qualified name or ``?ns=``);
    ``regional`` when it named the regional endpoint (``docker.LOC.rep.pkg.dev``),
    which upstream calls then go to. The cache knows the image by its standard host
    either way (``str``), so both spellings share one entry.
    """

    path: str
    location: str | None = None
    regional: bool = False

    @classmethod
    def parse(cls, name: str, *, ns: str | None = None) -> Repository:
        if not name or len(name) > MAX_NAME_LENGTH + len("docker.europe-southwest1.rep.pkg.dev/"):
            raise RegistryError(ErrorCode.NAME_INVALID, "repository name is empty or too long")
        endpoint = None
        first, sep, rest = name.partition("/")
        host_endpoint = endpoint_of_host(first) if sep else None
        if host_endpoint is not None:
            endpoint, name = host_endpoint, rest
        elif ns:
            endpoint = endpoint_of_host(ns)
        if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
            raise RegistryError(
                ErrorCode.NAME_INVALID,
                f"invalid repository name {name[:100]!r}: lowercase letters, digits and "
                "separators (. _ __ -), path components joined by /",
            )
        if endpoint is None:
            return cls(name)
        return cls(name, location_syntax(endpoint[0]), endpoint[1])

    @property
    def segments(self) -> list[str]:
        return self.path.split("/")

    @property
    def domain_scoped(self) -> bool:
        """``example.com/proj/...``: the project ``example.com:proj`` (GAR.md N5)."""
        return "." in self.segments[0]

    @property
    def _project_parts(self) -> int:
        return 2 if self.domain_scoped else 1

    @property
    def project(self) -> str:
        """The project id as the REST APIs write it (``example.com:proj``)."""
        return ":".join(self.segments[: self._project_parts])

    @property
    def project_path(self) -> str:
        """The project as image names write it (``example.com/proj``)."""
        return "/".join(self.segments[: self._project_parts])

    @property
    def repository(self) -> str | None:
        parts = self.segments
        return parts[self._project_parts] if len(parts) > self._project_parts else None

    @property
    def image(self) -> str:
        return "/".join(self.segments[self._project_parts + 1 :])

    @property
    def resource_name(self) -> str:
        """``projects/P/locations/L/repositories/R``; the location must be known."""
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"

    def require_gar_shape(self) -> None:
        """GAR paths have at least PROJECT/REPOSITORY/IMAGE."""
        if len(self.segments) < self._project_parts + 2:
            shape = (
                "DOMAIN/PROJECT/REPOSITORY/IMAGE"
                if self.domain_scoped
                else "PROJECT/REPOSITORY/IMAGE"
            )
            raise RegistryError(
                ErrorCode.NAME_INVALID,
                f"{self.path!r}: Artifact Registry images are named {shape}",
            )

    def with_location(self, location: str) -> Repository:
        return Repository(self.path, location, self.regional)

    def __str__(self) -> str:
        return f"{gar_host(self.location)}/{self.path}" if self.location else self.path


def parse_tag(text: str) -> str:
    if not _TAG.fullmatch(text):
        raise RegistryError(ErrorCode.MANIFEST_INVALID, f"invalid tag {text[:140]!r}")
    return text


def parse_reference(text: str) -> str | Digest:
    """A manifest reference: a digest when it has a colon, else a tag."""
    return Digest.parse(text) if Digest.is_digest(text) else parse_tag(text)


@dataclass(frozen=True, slots=True)
class ImageReference:
    """``[LOCATION-docker.pkg.dev/]PROJECT/REPO/IMAGE(:tag|@digest)``."""

    repository: Repository
    reference: str | Digest

    @classmethod
    def parse(cls, text: str, *, ns: str | None = None) -> ImageReference:
        name, at, digest = text.partition("@")
        if at:
            return cls(Repository.parse(name, ns=ns), Digest.parse(digest))
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            return cls(Repository.parse(name[:colon], ns=ns), parse_tag(name[colon + 1 :]))
        return cls(Repository.parse(name, ns=ns), "latest")

    @property
    def is_digest(self) -> bool:
        return isinstance(self.reference, Digest)

    def __str__(self) -> str:
        sep = "@" if self.is_digest else ":"
        return f"{self.repository}{sep}{self.reference}"
