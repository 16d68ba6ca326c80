"""The access policy in force, and the one decision a request naming a repository meets.

``AccessPolicy`` holds the current ``Access``: who (credentials from the htpasswd and
tokens files) and what (the rules file). At most every ``access.reload_interval`` it
looks at the files and, when one changed, reads all three into a new ``Access``; a
request already running keeps the ``Access`` it started with (the middleware puts it
in the request's state), so a reload drops nothing in flight. A new file that does not
load keeps the old policy and says why in one log line, once per broken version.

The decision on a repository (``authorize``) is made where a route turns the client's
name into the repository as GAR knows it (``proxy.routes.common``: mirrors, ``?ns=``,
a mirror's own listener, host-qualified names, the default project), never on the
client's spelling: every spelling of a repository meets the same rule. The middleware
(``proxy.auth.middleware``) only says who the client is; with rules in force it also
refuses to let a successful answer out of a request on which no decision was made
(``DECIDED``), so a route that forgot to ask fails closed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.auth.credentials import Authenticator
from proxy.auth.rules import ANONYMOUS, Rules
from proxy.auth.throttle import LoginThrottle
from proxy.clock import SYSTEM, Clock
from proxy.config import AccessSettings, ConfigError
from proxy.oci.errors import ErrorCode, RegistryError

log = logging.getLogger("gar_proxy.access")

PULL, PUSH = "pull", "push"
REALM = 'Basic realm="gar-proxy"'
# Keys of ``scope["state"]`` (``request.state``).
IDENTITY = "identity"  # who: an identity, "anonymous", or None where none was needed
ACCESS = "access"  # the Access this request is judged by
DECIDED = "access_decided"  # a route asked (or listed with a filter)

Stamp = tuple[int, int, int, int] | None


@dataclass(frozen=True)
class Access:
    """One version of the policy: who (``authenticator``, None when client auth is off)
    and what (``rules``)."""

    settings: AccessSettings
    authenticator: Authenticator | None
    rules: Rules

    @classmethod
    def load(
        cls, settings: AccessSettings, clock: Clock = SYSTEM, previous: Access | None = None
    ) -> Access:
        """Reads the files now; a bad one is a ``ConfigError`` of one line."""
        authenticator = None
        try:
            if settings.enabled:
                authenticator = Authenticator.from_files(
                    settings.htpasswd_file,
                    settings.tokens_file,
                    clock,
                    remember=settings.credentials_ttl,
                )
                if previous is not None and previous.authenticator is not None:
                    authenticator.adopt(previous.authenticator)
            rules = Rules.load(settings.rules_file)
        except ValueError as error:
            raise ConfigError(f"access: {error}") from None
        return cls(settings, authenticator, rules)

    @property
    def restricted(self) -> bool:
        """Rules are in force: identities differ in what they may do."""
        return self.rules.grants is not None

    def is_admin(self, identity: str | None) -> bool:
        if self.authenticator is None or identity is None or identity == ANONYMOUS:
            return False
        return self.rules.is_admin(identity)


def _stamp(path: Path) -> Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None  # gone (a secret mount swapping its link): the load says why
    return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_dev)


class AccessPolicy:
    """The ``Access`` in force, re-read when its files change."""

    def __init__(self, settings: AccessSettings, clock: Clock = SYSTEM) -> None:
        self.settings, self.clock = settings, clock
        files = (settings.htpasswd_file, settings.tokens_file, settings.rules_file)
        self.files = tuple(path for path in files if path is not None)
        self._stamps = self._read_stamps()
        self.current = Access.load(settings, clock)  # an error here stops start-up
        self._checked = clock.monotonic()
        self._broken: tuple[Stamp, ...] | None = None
        self.reloads = 0
        # Per client address; outlives reloads (a new file is no reason to forget).
        self.throttle = LoginThrottle(
            burst=settings.failed_login_burst,
            interval=settings.failed_login_interval,
            clock=clock,
        )

    def _read_stamps(self) -> tuple[Stamp, ...]:
        return tuple(_stamp(path) for path in self.files)

    def now(self) -> Access:
        """The current ``Access``, after a look at the files when one is due."""
        if self.files and self.clock.monotonic() - self._checked >= self.settings.reload_interval:
            self.reload()
        return self.current

    def reload(self) -> bool:
        """Look at the files now; True when a changed set was loaded."""
        self._checked = self.clock.monotonic()
        stamps = self._read_stamps()
        if stamps in (self._stamps, self._broken):
            return False
        try:
            loaded = Access.load(self.settings, self.clock, previous=self.current)
        except ConfigError as error:
            self._broken = stamps
            log.warning("access: keeping the policy in force; the changed files do not load: %s",
                        error)  # fmt: skip
            return False
        if self._read_stamps() != stamps:
            return False  # written while we read it: read it whole on the next look
        self.current, self._stamps, self._broken = loaded, stamps, None
        self.reloads += 1
        log.info("access: loaded changed files (%s)", ", ".join(str(p) for p in self.files))
        return True


# --- decisions on a request (its ASGI scope's state) -----------------------------------


def _state(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def judged_by(scope: MutableMapping[str, Any]) -> tuple[Access, str]:
    """The ``Access`` and identity this request is judged by (the middleware set them;
    without them nothing is allowed)."""
    state = _state(scope)
    access, identity = state.get(ACCESS), state.get(IDENTITY)
    if not isinstance(access, Access) or not isinstance(identity, str):
        raise RuntimeError("no access decision possible: AccessControl did not run")
    return access, identity


def permitted(scope: MutableMapping[str, Any], action: str, repository: str) -> bool:
    """May this request's identity ``action`` ``repository`` (as GAR knows it)?"""
    access, identity = judged_by(scope)
    _state(scope)[DECIDED] = True
    return access.rules.allows(identity, action, repository)


def authorize(scope: MutableMapping[str, Any], action: str, repository: str, asked: str) -> None:
    """Raise unless this request may ``action`` ``repository``; ``asked`` is the name
    as the client gave it: the refusal names only that, never what it maps to."""
    if permitted(scope, action, repository):
        return
    access, identity = judged_by(scope)
    denied(scope, identity, f"may not {action} {repository}", repository=repository)
    if identity == ANONYMOUS and access.authenticator is not None:
        raise unauthorized(None)  # credentials might grant it
    raise RegistryError(ErrorCode.DENIED, f"{identity} may not {action} {asked[:300]}")


def listing_filter(scope: MutableMapping[str, Any]) -> Callable[[str], bool] | None:
    """What a listing (the catalog, the status page) may show this request: None for
    everything (no rules, or an admin), else a test on a repository name."""
    access, identity = judged_by(scope)
    _state(scope)[DECIDED] = True
    if not access.restricted or access.is_admin(identity):
        return None
    return lambda repository: access.rules.allows(identity, PULL, repository)


def pull_filter(scope: MutableMapping[str, Any]) -> Callable[[str], bool] | None:
    """What this request's identity may pull, for a service that lends it what the
    cache holds (a manifest PUT completed from the cache): None for everything (no
    rules, or a pull grant on every repository), else a test on a repository name.
    Unlike ``listing_filter``, being an admin adds nothing: names are not content."""
    access, identity = judged_by(scope)
    if access.rules.allows_everything(identity, PULL):
        return None
    return lambda repository: access.rules.allows(identity, PULL, repository)


def unauthorized(why: str | None, headers: dict[str, str] | None = None) -> RegistryError:
    message = why or "authentication required"
    challenge = {"WWW-Authenticate": REALM, **(headers or {})}
    return RegistryError(ErrorCode.UNAUTHORIZED, message, headers=challenge)


def denied(
    scope: MutableMapping[str, Any],
    identity: str | None,
    reason: str,
    *,
    repository: str | None = None,
) -> None:
    """The one log line of a refusal: who, what, why; never a credential."""
    client = scope.get("client") or ("", 0)
    fields = {"identity": identity, "repository": repository, "reason": reason,
              "client": str(client[0])}  # fmt: skip
    log.info("access denied: %s %s", identity or "(no identity)", reason, extra=fields)
