"""Client credentials: an htpasswd file (bcrypt only) and a tokens file.

htpasswd lines are ``NAME:$2y$...`` as ``htpasswd -B`` writes them; any other hash kind
(MD5 ``$apr1$``, SHA ``{SHA}``, crypt, plain) stops start-up: they are weak, and a
file that silently locks a user out is worse than one line saying why. Tokens lines
are ``NAME:TOKEN``; ``#`` starts a comment. A client sends either
``Authorization: Basic`` (user and password, or user and token, which is what
``docker login`` can store) or ``Authorization: Bearer TOKEN``.

bcrypt costs ~0.1-0.3 s per check by design and clients send credentials on every
request, so a good (user, password) pair is remembered, by a SHA-256 of both, for
``REMEMBER`` seconds; checks run off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from pathlib import Path

import bcrypt

from proxy.clock import SYSTEM, Clock

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_MAX = 72  # bytes of password bcrypt looks at
REMEMBER = 300.0
REMEMBERED_MAX = 4096


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
    return tokens


class Authenticator:
    """Identity for an ``Authorization`` header value, or None."""

    def __init__(
        self, users: dict[str, bytes], tokens: dict[str, str], clock: Clock = SYSTEM
    ) -> None:
        self.users, self.tokens, self.clock = users, tokens, clock
        self._remembered: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    @classmethod
    def from_files(cls, htpasswd: Path | None, tokens: Path | None) -> Authenticator:
        return cls(
            parse_htpasswd(htpasswd) if htpasswd else {}, parse_tokens(tokens) if tokens else {}
        )

    async def identify(self, authorization: str) -> str | None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._token(value.strip())
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        token_owner = self._token(password)
        if token_owner is not None and token_owner == user:
            return user
        return await self._password(user, password)

    def _token(self, token: str) -> str | None:
        # Compare against every token so that timing says nothing about which matched.
        found = None
        for known, name in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = name
        return found

    async def _password(self, user: str, password: str) -> str | None:
        hashed = self.users.get(user)
        if hashed is None:
            return None
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        now = self.clock.monotonic()
        remembered = self._remembered.get(key)
        if remembered is not None and remembered[1] > now:
            return remembered[0]
        secret = password.encode()
        if len(secret) > BCRYPT_MAX:  # bcrypt >= 5 raises on these; none can match
            return None
        if not await asyncio.to_thread(bcrypt.checkpw, secret, hashed):
            return None
        self._remembered[key] = (user, now + REMEMBER)
        self._remembered.move_to_end(key)
        while len(self._remembered) > REMEMBERED_MAX:
            self._remembered.popitem(last=False)
        return user
