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


# One challenge: a scheme, then ``name=value`` pairs (a value quoted or a token); a new
# challenge begins where a bare token follows a comma (RFC 7235 §4.1).
_SCHEME = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?=[\s,]|$)(?!\s*=)")


def parse_challenges(header: str | None) -> list[Challenge]:
    """Every challenge of a ``WWW-Authenticate`` value (several headers arrive joined
    by commas).

    >>> [c.scheme for c in parse_challenges('Basic realm="x", Bearer realm="https://h/t"')]
    ['basic', 'bearer']
    >>> [c.scheme for c in parse_challenges('Negotiate, Bearer realm="r",scope="a:b:pull"')]
    ['negotiate', 'bearer']
    """
    challenges: list[Challenge] = []
    text, at = header or "", 0
    while (scheme := _SCHEME.match(text, at)) is not None:
        params: dict[str, str] = {}
        at = scheme.end()
        while (param := _PARAM.match(text, at)) is not None and param.group(1):
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            at = param.end()
        challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


def parse_challenge(header: str | None) -> Challenge | None:
    """The Bearer challenge if one is offered (the one a token trade answers), else the
    first.

    >>> parse_challenge('Basic realm="Google", Bearer realm="https://h/v2/token"').realm
    'https://h/v2/token'
    """
    challenges = parse_challenges(header)
    bearer = [c for c in challenges if c.scheme == "bearer"]
    found = bearer or challenges
    return found[0] if found else None
