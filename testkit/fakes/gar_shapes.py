"""Answers in Google's own shapes, for the fake GAR and the fakes beside it.

- ``google_error``: the REST APIs' JSON error (AIP-193) with an ``ErrorInfo`` reason
  (docs/GAR.md R1), and ``service_disabled``, an API that is not enabled (R2);
- ``manifest_digest``: what a registry names a manifest by, including the signed
  schema-1 rule (N2).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Literal

from starlette.responses import Response

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
Schema1Digest = Literal["canonical", "raw"]


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def schema1_payload(data: bytes) -> bytes:
    """A signed schema-1 manifest without its signatures: the bytes libtrust signed,
    ``data[:formatLength] + formatTail`` from the first signature's protected header
    (distribution's ``manifest/schema1``, GAR.md N2). Unsigned: the bytes as they are."""
    try:
        signatures = json.loads(data).get("signatures")
        protected = json.loads(_b64url(signatures[0]["protected"]))
        return data[: int(protected["formatLength"])] + _b64url(protected["formatTail"])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return data


def manifest_digest(data: bytes, media_type: str, schema1: Schema1Digest = "canonical") -> str:
    """The digest a registry names a manifest by: its bytes' sha256, except a signed
    schema-1 manifest's, which distribution takes over the signed payload (N2; which
    rule GAR uses is unknown, so the fake can play either)."""
    if media_type == SCHEMA1_SIGNED and schema1 == "canonical":
        return _sha(schema1_payload(data))
    return _sha(data)


def google_error(
    status: int,
    message: str,
    reason: str | None = None,
    *,
    domain: str = "googleapis.com",
    metadata: dict[str, str] | None = None,
) -> Response:
    """Google's JSON error (AIP-193): ``{"error": {code, message, status, details}}``
    with an ``ErrorInfo`` detail naming the reason when there is one (GAR.md R1)."""
    error: dict[str, Any] = {"code": status, "message": message, "status": _GOOGLE_STATUS[status]}
    if reason is not None:
        info: dict[str, Any] = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": domain,
        }
        if metadata:
            info["metadata"] = metadata
        error["details"] = [info]
    return Response(json.dumps({"error": error}), status, media_type="application/json")


def service_disabled(title: str, service: str, project: str) -> Response:
    """GAR.md R2: SERVICE_DISABLED, word for word as Google's front end writes it."""
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={project}"
    message = (
        f"{title} has not been used in project {project} before or it is disabled. Enable it"
        f" by visiting {url} then retry. If you enabled this API recently, wait a few minutes"
        " for the action to propagate to our systems and retry."
    )
    metadata = {"service": service, "consumer": f"projects/{project}", "activationUrl": url}
    return google_error(403, message, "SERVICE_DISABLED", metadata=metadata)
