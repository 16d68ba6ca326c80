"""Where Google credentials come from, and what to say when Google rejects them.

``discover(settings)`` picks the source (see ``proxy.upstream.gcp`` for the order);
``load_credentials`` turns it into google-auth credentials for some scopes;
``proxy.upstream.gcp_advice`` says what to do when Google refuses them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.auth
import google.auth.compute_engine
import google.auth.exceptions
import google.auth.impersonated_credentials
import httpx

from proxy.config import GcpSettings
from proxy.oci.errors import ErrorCode, RegistryError
from proxy.upstream.gcp_advice import reason

_LOG = logging.getLogger("gar_proxy.auth")

Scopes = tuple[str, ...]

NO_CREDENTIALS = (
    "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS, GAR_SERVICE_ACCOUNT_KEY, "
    "run `gcloud auth application-default login`, or run on GCE/GKE"
)


@dataclass(frozen=True)
class Source:
    name: str
    load: Callable[[Scopes], Any]  # scopes -> google.auth credentials
    install_hint: str | None = None  # where a replacement key goes; None for the metadata server


def unauthorized(message: str) -> RegistryError:
    return RegistryError(ErrorCode.CREDENTIALS_REJECTED, message)


# --- finding the source ------------------------------------------------------------------------


async def discover(settings: GcpSettings) -> Source:
    """The first credential source that is configured, or the metadata server."""
    path = settings.credentials_file
    if path is not None:
        if path.is_file():
            return file_source(
                f"key file {path}", path, "point GOOGLE_APPLICATION_CREDENTIALS at it"
            )
        _LOG.warning(
            "GOOGLE_APPLICATION_CREDENTIALS names %s, which does not exist; "
            "trying the next credential source",
            path,
        )
    if settings.service_account_key:
        return inline_source(settings.service_account_key)
    adc = settings.adc_file
    if adc is not None and adc.is_file():
        return file_source(
            f"application default credentials {adc}",
            adc,
            f"copy it to {adc} (or point GOOGLE_APPLICATION_CREDENTIALS at it)",
        )
    # Normal on GCE/GKE, hence not a warning.
    _LOG.info("no application default credentials at %s; trying the metadata server", adc)
    if await _metadata_answers(settings):
        host = settings.metadata_host
        return Source("metadata server", functools.partial(_metadata_credentials, host))
    raise unauthorized(NO_CREDENTIALS)


async def _metadata_answers(settings: GcpSettings) -> bool:
    """Whether a metadata server answers as one, within the metadata timeout."""
    host = settings.metadata_host
    timeout = settings.metadata_timeout
    try:
        # The overall deadline also covers a slow DNS lookup of metadata.google.internal;
        # trust_env=False because the link-local metadata server is never behind a proxy.
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
        ):
            response = await client.get(
                f"http://{host}/computeMetadata/v1/", headers={"Metadata-Flavor": "Google"}
            )
    except (TimeoutError, httpx.HTTPError, OSError) as error:
        _LOG.warning(
            "metadata server %s did not answer within %g s (%s); no credential source left",
            host,
            timeout,
            type(error).__name__,
        )
        return False
    if response.headers.get("Metadata-Flavor") != "Google":
        _LOG.warning(
            "%s answered, but not as a Google metadata server; no credential source left", host
        )
        return False
    return True


# --- credential loaders -----------------------------------------------------------------------


def file_source(name: str, path: Path, install_hint: str) -> Source:
    def load(scopes: Scopes) -> Any:
        try:
            info = json.loads(path.read_text())
        except ValueError as error:
            raise unauthorized(f"{name} is not a JSON credentials file: {error}") from None
        return credentials_from_info(info, scopes)

    return Source(name, load, install_hint)


def credentials_from_info(info: Any, scopes: Scopes) -> Any:
    """google-auth credentials from a credentials file's JSON, without side trips.

    ``external_account`` (workload identity federation) is built from its own class:
    google-auth's loader also looks up the project id at load time, one more STS trade
    and a Cloud Resource Manager call that fails where egress is limited (and is not
    needed: names carry the project). An ``impersonated_service_account`` file's
    ``generateAccessToken`` URL is used as it names it: google-auth reads only the
    target account from it and always calls iamcredentials.googleapis.com.
    """
    if not isinstance(info, dict):
        raise ValueError("a credentials file holds a JSON object")
    if info.get("type") == "external_account":
        return _external_account(info, scopes)
    credentials = google.auth.load_credentials_from_dict(  # type: ignore[no-untyped-call]
        info, scopes=list(scopes)
    )[0]
    url = info.get("service_account_impersonation_url")
    if isinstance(credentials, google.auth.impersonated_credentials.Credentials) and url:
        credentials._iam_endpoint_override = str(url)
    return credentials


def _external_account(info: dict[str, Any], scopes: Scopes) -> Any:
    """google-auth's own dispatch (AWS, an executable, else a file or URL source)."""
    source = info.get("credential_source") or {}
    if info.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
        from google.auth import aws

        return aws.Credentials.from_info(info, scopes=list(scopes))  # type: ignore[no-untyped-call]
    if isinstance(source, dict) and source.get("executable") is not None:
        from google.auth import pluggable

        return pluggable.Credentials.from_info(info, scopes=list(scopes))  # type: ignore[no-untyped-call]
    from google.auth import identity_pool

    return identity_pool.Credentials.from_info(info, scopes=list(scopes))  # type: ignore[no-untyped-call]


def inline_source(text: str) -> Source:
    # Never echo the text: it is a private key.
    try:
        info = json.loads(text)
    except json.JSONDecodeError as error:
        raise unauthorized(
            f"GAR_SERVICE_ACCOUNT_KEY is not valid JSON (line {error.lineno}, column "
            f"{error.colno}); it must hold a whole service-account key file"
        ) from None
    if not isinstance(info, dict):
        raise unauthorized("GAR_SERVICE_ACCOUNT_KEY must hold a JSON object (a key file)")

    def load(scopes: Scopes) -> Any:
        return credentials_from_info(info, scopes)

    return Source(
        "inline key (GAR_SERVICE_ACCOUNT_KEY)", load, "put its JSON in GAR_SERVICE_ACCOUNT_KEY"
    )


def _metadata_credentials(host: str, scopes: Scopes) -> Any:
    from google.auth.compute_engine import _metadata

    # google-auth reads GCE_METADATA_HOST once, when it is imported; the setting (which may
    # come from the TOML file) must win, or the ping and the token would use different hosts.
    if getattr(_metadata, "_GCE_METADATA_HOST", host) != host:
        _metadata._GCE_METADATA_HOST = host
    return google.auth.compute_engine.Credentials(  # type: ignore[no-untyped-call]
        scopes=list(scopes)
    )


def load_credentials(source: Source, scopes: Scopes, token_uri: str | None) -> Any:
    try:
        credentials = source.load(scopes)
    except (google.auth.exceptions.GoogleAuthError, ValueError, OSError) as error:
        raise unauthorized(
            f"could not load Google credentials from {source.name}: {reason(error)}"
        ) from None
    if token_uri is not None and hasattr(credentials, "with_token_uri"):
        credentials = credentials.with_token_uri(token_uri)
    return credentials
