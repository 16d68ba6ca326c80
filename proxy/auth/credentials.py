"""Client credentials: an htpasswd file (bcrypt only) and a tokens file.

htpasswd lines are ``NAME:$2y$...`` as ``htpasswd -B`` writes them; any other hash kind
(MD5 ``$apr1$``, SHA ``{SHA}``, crypt, plain) stops start-up: they are weak, and a
file that silently locks a user out is worse than one line saying why. Tokens lines
are ``NAME:TOKEN``; ``#`` starts a comment. A client sends either
``Authorization: Basic`` (user and password, or user and token, which is what
``docker login`` can store) or ``Authorization: Bearer TOKEN``.

bcrypt costs ~65 ms of CPU per check at cost 10 (more at higher costs) by design, and
clients send credentials on every request, so an ``Authorization`` value that was
verified is remembered for ``remember`` seconds (``access.credentials_ttl``), keyed by
an HMAC of it under a key made at start (never the password, and not a hash that a
dictionary of common passwords reverses); checks run off the event loop. A user name
that is not in the file costs a bcrypt check too, so timing does not tell which names
exist. Failed logins are limited per client address by ``proxy.auth.throttle``; while
an address is limited only remembered credentials are accepted from it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections import OrderedDict
from pathlib import Path

import bcrypt

from proxy.clock import SYSTEM, Clock
from proxy.redact import remember_secret

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_MAX = 72  # bytes of password bcrypt looks at
REMEMBER = 300.0
REMEMBERED_MAX = 4096


@functools.cache
def _decoy() -> bytes:
    """Checked for names not in the file, at htpasswd -B's default cost (made once,
    when first needed: ~65 ms)."""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=10))


class CredentialsError(ValueError):
    """A credentials file cannot be used; the message is one line naming file and line."""


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text()
    except OSError as error:
        raise CredentialsError(f"{path}: {error.strerror or error}") from None
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            found.append((number, line))
    return found


def _split(path: Path, number: int, line: str) -> tuple[str, str]:
    name, sep, secret = line.partition(":")
    if not sep or not name or not secret:
        raise CredentialsError(f"{path} line {number}: expected NAME:SECRET")
    return name, secret


def parse_htpasswd(path: Path) -> dict[str, bytes]:
    """``{user: bcrypt hash}``; any other hash kind is an error naming the line."""
    users: dict[str, bytes] = {}
    for number, line in _lines(path):
        name, hashed = _split(path, number, line)
        if not hashed.startswith(BCRYPT_PREFIXES):
            raise CredentialsError(
                f"{path} line {number}: user {name!r} has a non-bcrypt hash; "
                "only bcrypt is accepted (htpasswd -B)"
            )
        users[name] = hashed.encode()
    return users


def parse_tokens(path: Path) -> dict[str, str]:
    """``{token: identity}``."""
    tokens: dict[str, str] = {}
    for number, line in _lines(path):
        name, token = _split(path, number, line)
        tokens[token] = name
        remember_secret(token)
    return tokens


class Authenticator:
    """Identity for an ``Authorization`` header value, or None."""

    def __init__(
        self,
        users: dict[str, bytes],
        tokens: dict[str, str],
        clock: Clock = SYSTEM,
        *,
        remember: float = REMEMBER,
    ) -> None:
        self.users, self.tokens, self.clock, self.remember = users, tokens, clock, remember
        self._key = secrets.token_bytes(32)
        # HMAC of the header value -> (identity, the user's hash or None for a token, until)
        self._remembered: OrderedDict[bytes, tuple[str, bytes | None, float]] = OrderedDict()

    @classmethod
    def from_files(
        cls,
        htpasswd: Path | None,
        tokens: Path | None,
        clock: Clock = SYSTEM,
        *,
        remember: float = REMEMBER,
    ) -> Authenticator:
        return cls(
            parse_htpasswd(htpasswd) if htpasswd else {},
            parse_tokens(tokens) if tokens else {},
            clock,
            remember=remember,
        )

    def adopt(self, previous: Authenticator) -> None:
        """Keep what ``previous`` remembered of users whose hash did not change (a
        reload of the files then costs no bcrypt check for them); tokens are cheap to
        check again. Both share the key, so remembered entries still match."""
        self._key = previous._key
        for key, (identity, hashed, until) in previous._remembered.items():
            if hashed is not None and self.users.get(identity) == hashed:
                self._remembered[key] = (identity, hashed, until)

    def remembered(self, authorization: str) -> str | None:
        """The identity of a value verified less than ``remember`` seconds ago."""
        found = self._remembered.get(self._digest(authorization))
        if found is None or found[2] <= self.clock.monotonic():
            return None
        return found[0]

    async def identify(self, authorization: str, *, remembered_only: bool = False) -> str | None:
        """Who sent ``authorization``; ``remembered_only``: no check but the memory
        (the client's address made too many failed logins)."""
        known = self.remembered(authorization)
        if known is not None or remembered_only:
            return known
        identity, hashed = await self._verify(authorization)
        if identity is not None and self.remember > 0:
            key = self._digest(authorization)
            self._remembered[key] = (identity, hashed, self.clock.monotonic() + self.remember)
            self._remembered.move_to_end(key)
            while len(self._remembered) > REMEMBERED_MAX:
                self._remembered.popitem(last=False)
        return identity

    def _digest(self, authorization: str) -> bytes:
        value = authorization.strip().encode("utf-8", "surrogateescape")
        return hmac.new(self._key, value, hashlib.sha256).digest()

    async def _verify(self, authorization: str) -> tuple[str | None, bytes | None]:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._token(value.strip()), None
        if scheme.lower() != "basic":
            return None, None
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        if not sep:
            return None, None
        token_owner = self._token(password)
        if token_owner is not None and token_owner == user:
            return user, None
        if await self._password(user, password):
            return user, self.users[user]
        return None, None

    def _token(self, token: str) -> str | None:
        # Compare against every token so that timing says nothing about which matched.
        found = None
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = name
        return found

    async def _password(self, user: str, password: str) -> bool:
        secret = password.encode()
        hashed = self.users.get(user)
        if len(secret) > BCRYPT_MAX:  # bcrypt >= 5 raises on these; none can match
            return False
        return await asyncio.to_thread(_check, secret, hashed)


def _check(secret: bytes, hashed: bytes | None) -> bool:
    matched = bcrypt.checkpw(secret, hashed or _decoy())
    return matched and hashed is not None
