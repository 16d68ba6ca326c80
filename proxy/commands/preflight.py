"""Start-up problems an operator can fix, as one line that says how (never a traceback).

Checked before the server binds, and before a command opens the cache: an unreadable
credentials file, an upstream CA file that is missing or holds no PEM certificate, a
cache directory that cannot be made or written; and, for ``serve``, a port that is
taken. Each is found here rather than half-way through opening the services.
"""

from __future__ import annotations

import errno
import os
import ssl
import tempfile
from pathlib import Path

from proxy.config import Settings


class StartupError(Exception):
    """A one-line explanation with what to do."""


def _uid() -> str:
    return f"uid {os.getuid()}" if hasattr(os, "getuid") else "this user"


def credentials_problem(path: Path, error: OSError) -> str:
    """What to say about a credentials file that could not be read.

    >>> credentials_problem(Path("/k.json"), PermissionError(13, "Permission denied"))[:40]
    'credentials file /k.json is not readable'
    """
    if error.errno == errno.EACCES:
        return (
            f"credentials file {path} is not readable by {_uid()}, which gar-proxy runs as: "
            f"chown it to that user (chmod 0600), or mount it readable for it"
        )
    if error.errno == errno.EISDIR:
        return f"credentials file {path} is a directory: name the key file itself"
    return f"credentials file {path} cannot be read ({error.strerror}): fix or unset it"


def check_credentials(settings: Settings) -> None:
    path = settings.gcp.credentials_file
    if settings.upstream.auth != "gcp" or path is None or not path.exists():
        return  # a missing file is not fatal: the next credential source is tried
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as error:
        raise StartupError(credentials_problem(path, error)) from None


def check(settings: Settings) -> None:
    """Every file check, in the order an operator would fix them."""
    check_credentials(settings)
    check_ca_file(settings.upstream.ca_file)
    check_cache_dir(settings.cache.dir)


def ca_problem(path: Path, error: OSError) -> str:
    """What to say about ``upstream.ca_file`` when it does not load.

    >>> ca_problem(Path("/ca.pem"), ssl.SSLError(0, "[X509: NO_CERTIFICATE_OR_CRL_FOUND]"))
    'upstream.ca_file /ca.pem holds no PEM certificate: give the CA bundle as PEM ...'
    >>> ca_problem(Path("/ca.pem"), FileNotFoundError(2, "No such file or directory"))
    'upstream.ca_file /ca.pem does not exist: fix the path, or unset it ...'
    """
    where = f"upstream.ca_file {path}"
    if isinstance(error, ssl.SSLError):
        why = "give the CA bundle as PEM (BEGIN CERTIFICATE blocks)"
        return f"{where} holds no PEM certificate: {why}"
    if error.errno == errno.ENOENT:
        return f"{where} does not exist: fix the path, or unset it to trust the system CAs"
    if error.errno == errno.EISDIR:
        return f"{where} is a directory: name the PEM file itself"
    if error.errno == errno.EACCES:
        return f"{where} is not readable by {_uid()}: chmod it, or mount it readable for it"
    return f"{where} cannot be read ({error.strerror}): fix or unset it"


def check_ca_file(path: Path | None) -> None:
    if path is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except OSError as error:  # ssl.SSLError is one
        raise StartupError(ca_problem(path, error)) from None


def check_cache_dir(directory: Path) -> None:
    hint = "choose another with --cache-dir (cache.dir, GAR_PROXY_CACHE_DIR)"
    if directory.exists() and not directory.is_dir():
        raise StartupError(f"cache dir {directory} is not a directory: {hint}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        message = f"cannot create cache dir {directory} ({error.strerror}): {hint}"
        raise StartupError(message) from None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-"):
            pass
    except OSError as error:
        raise StartupError(
            f"cache dir {directory} is not writable by {_uid()} ({error.strerror}): "
            f"chown it to that user, or {hint}"
        ) from None


def bind_error(host: str, port: int, error: OSError) -> StartupError:
    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return StartupError(
            f"{where} is already in use (another gar-proxy?): stop that process, or "
            "listen elsewhere with --listen HOST:PORT (server.listen)"
        )
    if error.errno == errno.EACCES:
        return StartupError(f"{where}: not allowed to bind; use a port above 1023")
    if error.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"{where}: no such local address; check --listen")
    return StartupError(f"cannot listen on {where}: {error.strerror}")
