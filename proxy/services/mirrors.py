"""Other registries' names, served from GAR remote repositories (``[[mirrors]]``).

Clients keep their image names; a request that says which registry it means is
rewritten to the mirror's GAR repository before the cache or upstream see the name:

- on a mirror's own listen address: always that mirror (dockerd's
  ``registry-mirrors`` sends Docker Hub names bare, ``library/alpine``);
- a host-qualified name: ``docker.io/library/alpine``, ``ghcr.io/org/tool``;
- containerd's ``?ns=docker.io``.

Docker Hub's ``library/`` rule applies on the way (``alpine`` is ``library/alpine``).
Any other name keeps its meaning (``PROJECT/REPO/IMAGE``, DESIGN.md section 2). A name
for a registry that is neither GAR nor a mirror is refused, listing the mirrors.

A GAR project id has no dot, but a domain-scoped project's name starts with its domain
(``example.com/proj/REPO/IMAGE`` for ``example.com:proj``, docs/GAR.md N5). After a GAR
host (or ``?ns=`` naming one) a dotted first segment is therefore always such a domain;
in a bare name it is a registry host (Docker's rule) unless it is one of the project
domains this proxy was told about (``routing.project_domains``, the default project's).

>>> from proxy.config.values import parse_mirrors
>>> table = MirrorTable(parse_mirrors("docker.io=p/hub@us,ghcr.io=p/ghcr"), gar=True)
>>> str(table.rewrite("alpine", ns="docker.io"))
'us-docker.pkg.dev/p/hub/library/alpine'
>>> table.rewrite("ghcr.io/org/tool", ns=None).path
'p/ghcr/org/tool'
>>> table.rewrite("proj/repo/app", ns=None) is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy.config.values import DOCKER_HUB, DOCKER_HUB_ALIASES, Mirror
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.oci.names import Repository, location_of_host
from proxy.services.locations import LocationResolver

_WILDCARDS = frozenset(("", "0.0.0.0", "::"))
_NAMES_REMEMBERED = 4096


def _canonical(host: str) -> str:
    host = host.lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


_HOST = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::\d+)?"
)


def _looks_like_host(segment: str) -> bool:
    """Docker's rule: a first component with a dot or a port, or ``localhost``, is a
    registry host. GAR project ids have neither, so this never takes a GAR path."""
    if not _HOST.fullmatch(segment):
        return False  # "..", "": left to the name check, which says NAME_INVALID
    return "." in segment or ":" in segment or segment.startswith("localhost")


class MirrorTable:
    """The configured mirrors, by registry host and by listen address."""

    def __init__(
        self,
        mirrors: Sequence[Mirror],
        *,
        gar: bool,
        tier: bool = False,
        project_domains: frozenset[str] = frozenset(),
    ) -> None:
        self.mirrors = tuple(mirrors)
        self.gar = gar
        self.tier = tier and not gar
        self.project_domains = project_domains
        self._by_host = {m.host: m for m in self.mirrors}
        self._names: dict[tuple[str, str | None, tuple[str, int] | None], Repository] = {}

    def __bool__(self) -> bool:
        return bool(self.mirrors)

    def listening(self, local: tuple[str, int] | None) -> Mirror | None:
        """The mirror whose own socket a request came in on (ASGI ``scope["server"]``)."""
        if local is None:
            return None
        host, port = local[0], local[1]
        for mirror in self.mirrors:
            if mirror.listen is None or mirror.listen[1] != port:
                continue
            if mirror.listen[0] in _WILDCARDS or mirror.listen[0] == host:
                return mirror
        return None

    def rewrite(
        self, name: str, *, ns: str | None, local: tuple[str, int] | None = None
    ) -> Repository | None:
        """The GAR repository for a mirrored name; ``None`` when no mirror applies."""
        mirror = self.listening(local)
        if mirror is not None:
            return self._target(mirror, name)
        first, sep, rest = name.partition("/")
        gar_ns = ns is not None and location_of_host(ns) is not None  # the name is GAR's
        if sep and _looks_like_host(first) and location_of_host(first) is None and not gar_ns:
            mirror = self._by_host.get(_canonical(first))
            if mirror is not None:
                return self._target(mirror, rest)
            if self.gar and first.lower() not in self.project_domains:
                raise RegistryError(ErrorCode.NAME_UNKNOWN, self._unknown_host(first))
            return None  # a declared project domain (or a plain registry's own name)
        mirror = self._by_host.get(_canonical(ns)) if ns else None
        return None if mirror is None else self._target(mirror, name)

    def _unknown_host(self, first: str) -> str:
        return (
            f"{first[:100]!r} is {self.describe()}; if it is the domain of a domain-scoped "
            f"project ({first[:100]}:PROJECT), name the image with its host "
            f"(LOCATION-docker.pkg.dev/{first[:100]}/PROJECT/REPO/IMAGE) or list the domain "
            "in routing.project_domains"
        )

    def repository(
        self, name: str, *, ns: str | None, local: tuple[str, int] | None = None
    ) -> Repository:
        """A client's name as upstream knows it, before its location is resolved:
        mirrored, else as a tier passes it on, else parsed. Remembered (the table is
        fixed; a name's answer cannot change), a bounded number of names."""
        key = (name, ns, None if local is None else (local[0], local[1]))
        found = self._names.get(key)
        if found is None:
            found = self.rewrite(name, ns=ns, local=local)
            if found is None:
                found = tier_name(name, ns) if self.tier else Repository.parse(name, ns=ns)
            if len(self._names) >= _NAMES_REMEMBERED:
                self._names.clear()
            self._names[key] = found
        return found

    def describe(self) -> str:
        """For refusals: which registries this proxy mirrors, if any."""
        if not self.mirrors:
            return "not mirrored here (no [[mirrors]] configured)"
        hosts = ", ".join(f"{m.host} -> {m.prefix}" for m in self.mirrors)
        return f"not a configured mirror (mirrors: {hosts})"

    @staticmethod
    def _target(mirror: Mirror, name: str) -> Repository:
        image = Repository.parse(name)  # NAME_INVALID for a bad remainder
        path = image.path
        if mirror.host == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"  # Docker Hub's official images
        return Repository(f"{mirror.prefix}/{path}", mirror.location)


def tier_name(name: str, ns: str | None) -> Repository:
    """For an upstream that is another gar-proxy (``upstream.tier``): the name whole,
    host included, with ``?ns=`` folded in as a host, so the upper tier resolves it as
    it would for the client (a GAR location, a mirror) and this tier caches it apart.

    >>> tier_name("library/alpine", "docker.io").path
    'docker.io/library/alpine'
    >>> tier_name("us-docker.pkg.dev/p/r/i", "docker.io").path
    'us-docker.pkg.dev/p/r/i'
    """
    first, sep, _ = name.partition("/")
    if ns and not (sep and _looks_like_host(first)):
        name = f"{ns.lower()}/{name}"
    Repository.parse(name)  # NAME_INVALID for what the upper tier would refuse
    return Repository(name)


def upstream_name(
    mirrors: MirrorTable,
    locations: LocationResolver,
    name: str,
    *,
    ns: str | None,
    local: tuple[str, int] | None = None,
) -> Repository:
    """A client's repository name as upstream knows it, before its location is looked
    for: mirrored (``ns``, the listener ``local``, a host in the name), then the
    default project. No I/O: what access rules are judged on."""
    try:
        return locations.named(mirrors.repository(name, ns=ns, local=local))
    except RegistryError as error:
        raise _with_mirrors(mirrors, error) from None


async def locate(
    mirrors: MirrorTable, locations: LocationResolver, repo: Repository, *, write: bool = False
) -> Repository:
    """``repo`` (from ``upstream_name``) with its location (``write``: for a push,
    which the repository checks treat apart)."""
    try:
        return await locations.resolve(repo, write=write)
    except RegistryError as error:
        raise _with_mirrors(mirrors, error) from None


def _with_mirrors(mirrors: MirrorTable, error: RegistryError) -> RegistryError:
    if mirrors and error.code is ErrorCode.NAME_INVALID:
        message = f"{error.message}; other registries' names need a mirror: {mirrors.describe()}"
        return RegistryError(error.code, message, detail=error.detail)
    return error


async def resolve_name(
    mirrors: MirrorTable,
    locations: LocationResolver,
    name: str,
    *,
    ns: str | None,
    local: tuple[str, int] | None = None,
    write: bool = False,
) -> Repository:
    """A client's repository name as upstream knows it: mirrored, then located."""
    repo = upstream_name(mirrors, locations, name, ns=ns, local=local)
    return await locate(mirrors, locations, repo, write=write)
