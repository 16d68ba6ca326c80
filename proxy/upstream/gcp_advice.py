"""What to say when Google will not issue an access token, by kind of credential.

google-auth wraps almost every failure in a ``RefreshError``; what fixes it depends on
where the credentials came from, so the advice is chosen by their type::

    service-account key      create a new key (it is expired, revoked or disabled)
    gcloud login (ADC)       gcloud auth application-default login
    external_account         the workload identity pool and provider, the subject token
                             source, and the service account's workloadIdentityUser grant
    impersonated account     roles/iam.serviceAccountTokenCreator on the target account
    metadata server          bind the GKE service account to a Google one, or attach an
                             account to the VM or node pool

The reason Google gave is kept (bounded, cut in the middle) in every message.
Whether a failure is worth a retry at all is ``transient``: google-auth turns a
metadata server's 5xx burst into a non-retryable ``RefreshError`` (docs/GAR.md R10),
which is still upstream trouble, not a verdict on the credentials.
"""

from __future__ import annotations

import re
from typing import Any

import google.auth.exceptions
import google.oauth2.credentials

from proxy.upstream.errors import RETRYABLE_STATUSES, bounded, upstream_message

# What Google's token endpoint says about keys and logins that no longer work.
REJECTION_MARKERS = (
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "jwt signature",
    "not found",
    "disabled",
    "deleted",
    "expired",
    "revoked",
)
# "Status: 503" (an answer) or "Response status: 503" (retries given up), as google-auth
# words its metadata failures; "answered HTTP 404" as ``reason`` words them.
_STATUS = re.compile(r"(?:[Ss]tatus:|answered HTTP) (\d{3})")
_UNAVAILABLE = "metadata server unavailable"
# GKE's metadata server, for a pod whose service account is bound to no Google one.
_UNBOUND = "unable to generate access token"


def reason(error: BaseException) -> str:
    """A short, one-line reason: the OAuth or Google error fields if there are any, a
    metadata server's status and words, else the message; the cause's appended."""
    inner = error.args[0] if error.args else None
    if isinstance(inner, BaseException):  # RefreshError(TransportError(...)): unwrap
        return reason(inner)
    data: Any = error.args[1] if len(error.args) > 1 else None
    if isinstance(data, dict) and "error" in data:
        text = f"{data['error']}: {data.get('error_description') or ''}".rstrip(": ")
    elif isinstance(data, str | bytes) and (said := _said(data)):
        text = f"{error.args[0]}: {said}"
    elif hasattr(data, "status") and hasattr(data, "data"):  # a metadata server's answer
        raw = data.data
        body = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        text = f"the metadata server answered HTTP {data.status}: {body}"
    else:
        text = str(inner) if error.args else type(error).__name__
        if error.__cause__ is not None and str(error.__cause__) not in text:
            text = f"{text}: {error.__cause__}"
    return bounded(text, 400)


def _said(body: str | bytes) -> str | None:
    code, message = upstream_message(body.encode() if isinstance(body, str) else body)
    if not code and not message:
        return None
    return f"{code}: {message}" if code and message else code or message


def transient(error: BaseException) -> bool:
    """Google could not be reached or was in trouble: retry later, the credentials may
    be fine. Includes the metadata server's 5xx/429 that google-auth gave up on."""
    if isinstance(error, google.auth.exceptions.TransportError) and not _status(error):
        return True
    if getattr(error, "retryable", False):
        return True
    status = _status(error)
    if status is not None:
        return status in RETRYABLE_STATUSES
    return _UNAVAILABLE in _text(error).lower()


def _text(error: BaseException) -> str:
    cause = error.__cause__
    return f"{error} {cause}" if cause is not None else str(error)


def _status(error: BaseException) -> int | None:
    found = _STATUS.search(_text(error))
    return int(found.group(1)) if found else None


def advice(source_name: str, install_hint: str | None, credentials: Any, why: str) -> str:
    """The message for a refused token, by the kind of credentials (module docstring)."""
    kind = type(credentials).__module__ + "." + type(credentials).__name__
    if install_hint is None or "compute_engine" in kind:
        return _metadata(why)
    if "impersonated_credentials" in kind:
        return _impersonated(source_name, credentials, why)
    if (
        "external_account" in kind
        or "identity_pool" in kind
        or kind.startswith(("google.auth.aws", "google.auth.pluggable"))
    ):
        return _federated(source_name, credentials, why)
    if not any(marker in why.lower() for marker in REJECTION_MARKERS):
        return f"Google refused an access token for {source_name}: {why}"
    if isinstance(credentials, google.oauth2.credentials.Credentials):
        return (
            f"Google rejected the application default credentials ({why}): the login "
            "expired or was revoked. Run `gcloud auth application-default login` again "
            "and restart gar-proxy."
        )
    email = getattr(credentials, "service_account_email", None) or "SA_EMAIL"
    return (
        f"Google rejected the service-account key from {source_name} ({why}): it is "
        "expired, revoked or disabled. Create a new key (gcloud iam service-accounts keys "
        f"create KEY.json --iam-account={email}), {install_hint}, and restart gar-proxy."
    )


def _metadata(why: str) -> str:
    status = _STATUS.search(why)
    if _UNBOUND in why.lower():
        return (
            f"the GKE metadata server did not issue an access token ({why}): bind this "
            "pod's Kubernetes service account to a Google service account (grant "
            "roles/iam.workloadIdentityUser on it to serviceAccount:PROJECT.svc.id.goog"
            "[NAMESPACE/KSA] and annotate the KSA with iam.gke.io/gcp-service-account)"
        )
    if status is not None and status.group(1) == "404":
        return (
            f"the metadata server knows no service account here ({why}): attach a "
            "service account to the VM or node pool, or use GKE workload identity"
        )
    return (
        f"the metadata server did not issue an access token ({why}): check the service "
        "account attached to this VM, or the GKE workload identity binding"
    )


def _impersonated(source_name: str, credentials: Any, why: str) -> str:
    target = getattr(credentials, "service_account_email", None) or "TARGET_SA"
    if "impersonated credentials" in why.lower():  # generateAccessToken said no
        return (
            f"Google would not let {source_name} impersonate {target} ({why}): grant the "
            "source identity roles/iam.serviceAccountTokenCreator on "
            f"{target} (gcloud iam service-accounts add-iam-policy-binding {target} "
            "--member=SOURCE --role=roles/iam.serviceAccountTokenCreator)"
        )
    return (
        f"the source credentials of {source_name} were refused ({why}): renew them "
        "(`gcloud auth application-default login --impersonate-service-account="
        f"{target}` for a gcloud login, a new key for a service account)"
    )


def _federated(source_name: str, credentials: Any, why: str) -> str:
    info = getattr(credentials, "info", None)
    info = info if isinstance(info, dict) else {}
    audience = info.get("audience") or "the provider"
    where = info.get("credential_source") or {}
    subject = where.get("file") or where.get("url") or "its credential_source"
    target = getattr(credentials, "service_account_email", None)
    if target and "impersonated credentials" in why.lower():
        return (
            f"the federated identity of {source_name} may not act as {target} ({why}): "
            "grant the workload identity pool's principal roles/iam.workloadIdentityUser "
            f"on {target}"
        )
    return (
        f"Google's STS refused the workload identity federation exchange of "
        f"{source_name} ({why}): check the pool and provider ({audience}), its attribute "
        f"mapping and condition, and that the subject token in {subject} is current and "
        "issued for that audience"
    )
