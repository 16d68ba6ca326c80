"""The ``proxy.gar`` modules' own exceptions, bound to the one error table.

The pure modules raise plain exceptions (they know nothing of registries); whatever
serves them to a client or a shell turns them into ``RegistryError`` here, once::

>>> from proxy.gar.vulnerabilities import ScanTimeout
>>> as_registry_error(ScanTimeout("still scanning")).code.wire
'SCAN_TIMEOUT'
"""

from __future__ import annotations

from proxy.gar.cleanup import CleanupPolicyError, RepositoryNotFound
from proxy.gar.jsonapi import NotFound
from proxy.gar.sbom import SbomUnreadable
from proxy.gar.vulnerabilities import ScanFailed, ScanTimeout, ScanUnsupported
from proxy.oci.errors import ErrorCode, RegistryError

_CODES: tuple[tuple[type[Exception], ErrorCode], ...] = (
    (ScanTimeout, ErrorCode.SCAN_TIMEOUT),
    (ScanUnsupported, ErrorCode.SCAN_UNSUPPORTED),  # before its base class, ScanFailed
    (ScanFailed, ErrorCode.SCAN_FAILED),
    (RepositoryNotFound, ErrorCode.GAR_NOT_FOUND),
    (NotFound, ErrorCode.GAR_NOT_FOUND),
    # GAR's answers we cannot use: upstream's fault, as an unreadable manifest would be
    (CleanupPolicyError, ErrorCode.UPSTREAM_BAD_GATEWAY),
    (SbomUnreadable, ErrorCode.UPSTREAM_BAD_GATEWAY),
)

GAR_ERRORS: tuple[type[Exception], ...] = tuple(kind for kind, _ in _CODES)


def as_registry_error(error: Exception) -> RegistryError:
    """The ``RegistryError`` for one of ``GAR_ERRORS`` (a RegistryError stays itself)."""
    if isinstance(error, RegistryError):
        return error
    for kind, code in _CODES:
        if isinstance(error, kind):
            return RegistryError(code, str(error) or code.default_message)
    raise TypeError(f"not a GAR error: {error!r}") from error
