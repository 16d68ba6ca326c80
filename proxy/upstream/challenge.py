"""Parsing ``WWW-Authenticate`` challenges (RFC 7235, as registries use them).

>>> c = parse_challenge('Bearer realm="https://us-docker.pkg.dev/v2/token",'
...                     'service="us-docker.pkg.dev",scope="repository:p/r/i:pull"')
>>> c.scheme, c.params["service"]
('bearer', 'us-docker.pkg.dev')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    def scope_for(self, default: str) -> str:
        """The scope(s) the challenge names, space separated; ``default`` if none."""
        return self.params.get("scope") or default


def parse_challenge(header: str | None) -> Challenge | None:
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
    return Challenge(scheme.lower(), params)
