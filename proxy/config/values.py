"""Parsers for setting values: each takes what TOML or the environment gave and returns
the typed value, or raises ``ValueError`` saying what was expected (the loader adds
which key it was).

>>> parse_size("50GiB"), parse_duration("5m"), parse_listen("127.0.0.1:0")
(53687091200, 300.0, ('127.0.0.1', 0))
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.oci.names import KNOWN_LOCATIONS


@dataclass(frozen=True)
class Route:
    """Send repositories under ``prefix`` (``project`` or ``project/repo``) to ``location``."""

    prefix: str
    location: str


# Docker Hub's other names: clients and deploy files use any of them.
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset(
    (DOCKER_HUB, "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
)


@dataclass(frozen=True)
class Mirror:
    """Serve registry ``host``'s images from the GAR remote repository ``project/repository``
    (in ``location``, or wherever the location rules say); ``listen`` is an address of its
    own whose requests are always this mirror's (dockerd's ``registry-mirrors``)."""

    host: str
    project: str
    repository: str
    location: str | None = None
    listen: tuple[str, int] | None = None

    @property
    def prefix(self) -> str:
        return f"{self.project}/{self.repository}"

    def __str__(self) -> str:
        where = f"@{self.location}" if self.location else ""
        listen = " listen {}:{}".format(*self.listen) if self.listen else ""
        return f"{self.host}={self.prefix}{where}{listen}"


@dataclass(frozen=True)
class WarmSchedule:
    """Keep the tags of ``image`` that match ``tags`` (a regex, searched), and every
    image ``files`` name (files or directories, read again each time), cached, checked
    every ``interval`` seconds, for ``platforms`` (``os/arch``; none: the host's).
    ``build_args`` are a Dockerfile's ``--build-arg``s, ``env_files`` a Compose file's
    ``--env-file``s (without them: the ``.env`` beside it)."""

    image: str = ""
    tags: str = "^latest$"
    interval: float = 3600.0
    platforms: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    env_files: tuple[str, ...] = ()

    def __str__(self) -> str:
        platforms = f" for {','.join(self.platforms)}" if self.platforms else ""
        what = [f"{self.image} tags /{self.tags}/"] if self.image else []
        what += [f"images in {', '.join(self.files)}"] if self.files else []
        return f"{' and '.join(what)} every {self.interval:g}s{platforms}"

    @property
    def name(self) -> str:
        return self.image or ", ".join(self.files)


@dataclass(frozen=True)
class SharedBucket:
    """``cache.shared``: the Cloud Storage bucket and object prefix of the shared blob
    tier; blob ``sha256:<hex>`` is the object ``PREFIX/sha256/<hex>``.

    >>> SharedBucket("team-cache", "gar-proxy").object_name("sha256", "ab12")
    'gar-proxy/sha256/ab12'
    """

    bucket: str
    prefix: str = ""

    def object_name(self, algorithm: str, hex_digest: str) -> str:
        name = f"{algorithm}/{hex_digest}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}" if self.prefix else f"gs://{self.bucket}"


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _split_number(text: str) -> tuple[float, str]:
    text = text.strip().lower().replace("_", "")
    i = len(text)
    while i and not (text[i - 1].isdigit() or text[i - 1] == "."):
        i -= 1
    return float(text[:i]), text[i:].strip()


def parse_size(value: Any) -> int:
    """``'50GiB'``, ``'512MB'``, ``1073741824`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    try:
        number, unit = _split_number(str(value))
        if number < 0 or unit not in _SIZE_UNITS:
            raise ValueError
        return int(number * _SIZE_UNITS[unit])
    except ValueError:
        raise ValueError(f"expected a size like '50GiB', got {value!r}") from None


def parse_duration(value: Any) -> float:
    """``'60s'``, ``'5m'``, ``'7d'``, ``30`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    try:
        number, unit = _split_number(str(value))
        if number < 0 or unit not in _DURATION_UNITS:
            raise ValueError
        return number * _DURATION_UNITS[unit]
    except ValueError:
        raise ValueError(f"expected a duration like '60s' or '5m', got {value!r}") from None


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"expected a non-negative number, got {value!r}")
    return number


def parse_positive_int(value: Any) -> int:
    number = parse_int(value)
    if number == 0:
        raise ValueError("expected a number above 0")
    return number


def parse_str(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def parse_optional_str(value: Any) -> str | None:
    return parse_str(value) or None


def parse_path(value: Any) -> Path:
    return Path(parse_str(value)).expanduser()


def parse_optional_path(value: Any) -> Path | None:
    return parse_path(value) if str(value) else None


@dataclass(frozen=True)
class Choice:
    """The parser of a setting that is one of a few words (``options``, which the
    example config lists).

    >>> choice("gcp", "none")("GCP")
    'gcp'
    """

    options: tuple[str, ...]

    def __call__(self, value: Any) -> str:
        text = parse_str(value).lower()
        if text not in self.options:
            raise ValueError(f"expected one of {', '.join(self.options)}, got {value!r}")
        return text


def choice(*options: str) -> Choice:
    return Choice(options)


def parse_location(value: Any) -> str:
    text = parse_str(value)
    if text not in KNOWN_LOCATIONS:
        raise ValueError(f"expected an Artifact Registry location such as 'us', got {value!r}")
    return text


def parse_listen(value: Any) -> tuple[str, int]:
    text = parse_str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"expected HOST:PORT with a numeric port, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port must be 0-65535, got {number}")
    return host.strip("[]"), number


def parse_hosts(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(str(item).strip().lower() for item in items if str(item).strip())


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: Any) -> tuple[Network, ...]:
    """Addresses and networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``), as a list or
    separated by commas; a typo stops start-up rather than trusting nobody by surprise.

    >>> [str(n) for n in parse_networks("127.0.0.1, 10.1.0.0/16,::1")]
    ['127.0.0.1/32', '10.1.0.0/16', '::1/128']
    """
    networks = []
    for item in parse_hosts(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def client_key(address: str) -> str:
    """Whose connection or login this is, for per-client bounds: an IPv4 address, or
    an IPv6 address's /64 (one host commonly holds a whole /64, so per address it
    would have 2**64 connection caps and failed-login buckets).

    >>> client_key("203.0.113.7"), client_key("2001:db8:1:2:aa::1"), client_key("::1")
    ('203.0.113.7', '2001:db8:1:2::/64', '::1')
    >>> client_key("::ffff:203.0.113.7"), client_key("unix-socket")
    ('203.0.113.7', 'unix-socket')
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# Cloud Storage bucket names: 3-63 characters per dot-separated part (222 in all),
# lowercase letters, digits, "-", "_" and ".", starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{1,220}[a-z0-9])?")


def parse_shared_bucket(value: Any) -> SharedBucket | None:
    """``gs://BUCKET`` or ``gs://BUCKET/PREFIX`` (the shared blob tier); empty: off.

    >>> parse_shared_bucket("gs://team-cache/gar-proxy/"), parse_shared_bucket("")
    (SharedBucket(bucket='team-cache', prefix='gar-proxy'), None)
    """
    text = parse_str(value).strip()
    if not text:
        return None
    if not text.startswith("gs://"):
        raise ValueError(f"expected gs://BUCKET/PREFIX, got {text!r}")
    bucket, _, prefix = text[len("gs://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or len(bucket) < 3 or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a Cloud Storage bucket name (in {text!r})")
    if any(len(part) > 63 for part in bucket.split(".")):
        raise ValueError(f"{bucket!r} is not a Cloud Storage bucket name (in {text!r})")
    prefix = prefix.rstrip("/")
    parts = prefix.split("/") if prefix else []
    if any(p in ("", ".", "..") or not p.isprintable() for p in parts):
        raise ValueError(f"the prefix {prefix!r} needs non-empty, printable parts (in {text!r})")
    return SharedBucket(bucket, prefix)


def parse_routes(value: Any) -> tuple[Route, ...]:
    """TOML ``[[routing.routes]]`` tables, or ``prefix=location,...`` in the environment."""
    items: list[tuple[Any, Any]]
    if isinstance(value, list):
        items = [(r.get("prefix"), r.get("location")) for r in value if isinstance(r, dict)]
        if len(items) != len(value):
            raise ValueError("expected tables with prefix and location")
    else:
        items = [tuple(part.split("=", 1)) for part in str(value).split(",") if part.strip()]  # type: ignore[misc]
    routes = []
    for prefix, location in items:
        if not prefix or not location:
            raise ValueError("each route needs a prefix and a location")
        routes.append(Route(str(prefix).strip("/ "), parse_location(str(location).strip())))
    return tuple(routes)


def _mirror(table: Any) -> Mirror:
    if not isinstance(table, dict) or not table.get("host") or not table.get("repository"):
        raise ValueError("each mirror needs host and repository (PROJECT/REPOSITORY)")
    unknown = set(table) - {"host", "repository", "location", "listen"}
    if unknown:
        raise ValueError(f"unknown mirror key(s) {sorted(unknown)}")
    host = str(table["host"]).strip().lower().removeprefix("https://").rstrip("/")
    project, sep, repository = str(table["repository"]).strip("/ ").partition("/")
    if not sep or not project or not repository or "/" in repository:
        raise ValueError(f"mirror {host}: repository must be PROJECT/REPOSITORY")
    location = table.get("location")
    listen = table.get("listen")
    return Mirror(
        DOCKER_HUB if host in DOCKER_HUB_ALIASES else host,
        project,
        repository,
        parse_location(str(location)) if location else None,
        parse_listen(listen) if listen else None,
    )


def parse_mirrors(value: Any) -> tuple[Mirror, ...]:
    """TOML ``[[mirrors]]`` tables (host, repository, location, listen), a JSON list of
    them, or ``HOST=PROJECT/REPO[@LOCATION],...`` in the environment.

    >>> parse_mirrors("docker.io=p/dockerhub-remote@us")[0].prefix
    'p/dockerhub-remote'
    """
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"mirrors: bad JSON ({error})") from None
    if not isinstance(value, list):
        value = [_short_mirror(part) for part in str(value).split(",") if part.strip()]
    mirrors = tuple(_mirror(table) for table in value)
    hosts = [m.host for m in mirrors]
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"a registry host is mirrored twice: {sorted(hosts)}")
    return mirrors


def _short_mirror(part: str) -> dict[str, str]:
    host, sep, target = part.strip().partition("=")
    repository, _, location = target.partition("@")
    if not sep:
        raise ValueError(f"expected HOST=PROJECT/REPO[@LOCATION], got {part.strip()!r}")
    table = {"host": host, "repository": repository}
    return {**table, "location": location} if location else table


def _warm_files(table: dict[str, Any], key: str = "files") -> tuple[str, ...]:
    files = table.get(key, [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f.strip() for f in files):
        what = "files or directories" if key == "files" else "environment files"
        raise ValueError(f"warm {key} must be a list of paths ({what})")
    return tuple(f.strip() for f in files)


def _warm_build_args(table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    args = table.get("build_args", {})
    if not isinstance(args, dict) or not all(
        isinstance(k, str) and k.strip() and "=" not in k and isinstance(v, str)
        for k, v in args.items()
    ):
        raise ValueError('warm build_args must be a table of strings: {NAME = "VALUE"}')
    return tuple(args.items())


def _warm_entry(table: Any) -> WarmSchedule:
    if not isinstance(table, dict) or not (table.get("image") or table.get("files")):
        raise ValueError(
            "each [[warm]] entry needs an image (a name without a tag) or files = [...]"
        )
    unknown = set(table) - {
        "image", "tags", "interval", "platforms", "files", "build_args", "env_files"
    }  # fmt: skip
    if unknown:
        raise ValueError(f"unknown [[warm]] key(s) {sorted(unknown)}")
    files = _warm_files(table)
    build_args = _warm_build_args(table)
    env_files = _warm_files(table, "env_files")
    if (build_args or env_files) and not files:
        raise ValueError("warm build_args and env_files are for files = [...]")
    image = str(table.get("image", "")).strip()
    label = image or ", ".join(files)
    if "@" in image or ":" in image.rpartition("/")[2]:
        raise ValueError(f"warm image {image!r}: give the tags as a pattern, not in the name")
    tags = str(table.get("tags", "^latest$"))
    try:
        re.compile(tags)
    except re.error as error:
        raise ValueError(f"warm {label}: tags {tags!r} is not a regex ({error})") from None
    interval = parse_duration(table.get("interval", "1h"))
    if interval <= 0:
        raise ValueError(f"warm {label}: interval must be positive")
    platforms = table.get("platforms", [])
    if not isinstance(platforms, list) or not all(p.count("/") in (1, 2) for p in platforms):
        raise ValueError(f"warm {label}: platforms must be a list of os/arch[/variant]")
    return WarmSchedule(
        image, tags, interval, tuple(str(p) for p in platforms), files, build_args, env_files
    )


def parse_warm_schedule(value: Any) -> tuple[WarmSchedule, ...]:
    """TOML ``[[warm]]`` tables (image, tags, files, interval, platforms) or a JSON list
    of them."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as error:
            raise ValueError(f"warm: expected a JSON list of tables ({error})") from None
    if not isinstance(value, list):
        raise ValueError("warm: expected a list of tables")
    return tuple(_warm_entry(table) for table in value)


SEVERITY_NAMES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "MINIMAL")


def parse_severity(value: Any) -> str:
    text = parse_str(value).upper()
    if text not in SEVERITY_NAMES:
        raise ValueError(f"expected one of {', '.join(SEVERITY_NAMES)}, got {value!r}")
    return text


def parse_cves(value: Any) -> tuple[str, ...]:
    """A TOML list of CVE ids, or ``CVE-1,CVE-2`` in the environment; upper-cased."""
    return tuple(item.upper() for item in parse_hosts(value))


GateOverrides = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]


def parse_gate_overrides(value: Any) -> GateOverrides:
    """``[vulnerability_gate.repositories."PREFIX"]`` tables, or their JSON in the
    environment; kept as tuples (settings are frozen); ``overrides_table`` undoes it."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError(
                'expected JSON like {"proj/repo/": {"block_severity": "HIGH"}}'
            ) from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError("expected a table of repository prefixes, each a table of rules")
    return tuple(
        (
            str(prefix),
            tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in rule.items()),
        )
        for prefix, rule in value.items()
    )


def overrides_table(overrides: GateOverrides) -> dict[str, dict[str, Any]]:
    return {
        prefix: {k: list(v) if isinstance(v, tuple) else v for k, v in rule}
        for prefix, rule in overrides
    }
