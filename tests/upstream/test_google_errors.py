"""Translating upstream error bodies: the registry's and Google's shapes, bounded.

Pure mapping (the end-to-end paths are in test_token_errors.py, test_iam_before_existence.py
and tests/gar/test_rest_errors.py).
"""

from __future__ import annotations

import json

from proxy.oci.errors import ErrorCode
from proxy.upstream.errors import MESSAGE_LIMIT, bounded, from_status, upstream_message

IAM = (
    'Permission "artifactregistry.repositories.downloadArtifacts" denied on resource '
    '"projects/proj/locations/us/repositories/repo" (or it may not exist)'
)


def google(message: str, status: str, reason: str | None) -> bytes:
    error: dict[str, object] = {"code": 403, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": reason, "domain": "googleapis.com"}]  # fmt: skip
    return json.dumps({"error": error}).encode()


def test_both_shapes_are_read() -> None:
    registry = json.dumps({"errors": [{"code": "DENIED", "message": IAM}]}).encode()
    assert upstream_message(registry) == ("DENIED", IAM)
    disabled = google("Artifact Registry API has not been used ...", "PERMISSION_DENIED",
                      "SERVICE_DISABLED")  # fmt: skip
    assert upstream_message(disabled) == (
        "SERVICE_DISABLED",
        "Artifact Registry API has not been used ...",
    )
    assert (
        upstream_message(google("no reason", "PERMISSION_DENIED", None))[0] == "PERMISSION_DENIED"
    )
    oauth = b'{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}'
    assert upstream_message(oauth) == ("invalid_grant", "Invalid JWT Signature.")
    assert upstream_message(b"<html>502</html>") == (None, None)
    assert upstream_message(b'["a list"]') == (None, None)


def test_a_google_403_says_its_reason_first() -> None:
    body = google("Request had insufficient authentication scopes.", "PERMISSION_DENIED",
                  "ACCESS_TOKEN_SCOPE_INSUFFICIENT")  # fmt: skip
    error = from_status(403, {}, body)
    assert error.code is ErrorCode.DENIED
    assert error.message == (
        "upstream denied access: ACCESS_TOKEN_SCOPE_INSUFFICIENT: Request had insufficient "
        "authentication scopes."
    )


def test_a_long_message_is_cut_in_the_middle_keeping_both_ends() -> None:
    long = IAM.replace('repositories/repo"', "repositories/" + "r" * 3000 + '"')
    error = from_status(
        403, {}, json.dumps({"errors": [{"code": "DENIED", "message": long}]}).encode()
    )
    assert len(error.message) < MESSAGE_LIMIT + 40
    assert error.message.startswith(
        'upstream denied access: Permission "artifactregistry.repositories.downloadArtifacts"'
    )
    assert error.message.endswith("(or it may not exist)")
    assert " … " in error.message
    assert bounded("short") == "short"
    assert bounded("a\n  b") == "a b"  # one line
