"""Secrets out of text: credentials in URLs, signed-URL and upload-state query values,
GAR's signed paths, Google access tokens. Used on every log line (``RedactingFilter``,
installed on the root handler by ``proxy.logs``), on error messages that quote upstream
URLs or answers, and by ``config check``.

GAR puts the credential of a blob download or an upload session in the path itself:
``/artifacts-downloads/namespaces/P/repositories/R/downloads/<~1 KB signature>`` and
``/artifacts-uploads/namespaces/P/repositories/R/uploads/<opaque>`` are served to
anyone, without ``Authorization`` (docs/GAR.md). The prefix is kept, the rest goes.

>>> redact("GET https://user:pw@gar.example/v2/?_state=abc&n=1&X-Amz-Signature=f00")
'GET https://<redacted>@gar.example/v2/?_state=<redacted>&n=1&X-Amz-Signature=<redacted>'
>>> redact("token=ya29.a0AfH6 sig=x signature=y keep=z")
'token=<redacted> sig=<redacted> signature=<redacted> keep=z'
>>> redact("cut: https://us-docker.pkg.dev/artifacts-downloads/namespaces/p/repositories/r/downloads/AB-c_=")
'cut: https://us-docker.pkg.dev/artifacts-downloads/<redacted>'
>>> redact('"Location": "/artifacts-uploads/namespaces/p/repositories/r/uploads/AJx?x=1"')
'"Location": "/artifacts-uploads/<redacted>?x=1"'
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

REDACTED = "<redacted>"

# scheme://USERINFO@host: everything between "//" and "@" that is not a path, query,
# fragment, space or quote.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#'\"<>]+@")
# name=value where name is one that carries a secret: upload state, signed-URL
# signatures and credentials (GCS X-Goog-*, S3 X-Amz-*, Azure sig), bearer tokens.
_SECRET_PARAM = re.compile(
    r"(?:(?<=[?&;\s\"'])|^)(?P<name>_state|x-goog-(?:signature|credential)|x-amz-[a-z0-9-]+"
    r"|sig|signature|token|access_token|refresh_token|client_secret)=[^&\s\"'#<>]+",
    re.IGNORECASE,
)
# Google OAuth access tokens, wherever they appear.
_GOOGLE_TOKEN = re.compile(r"\bya29\.[A-Za-z0-9_.-]+")
# GAR's signed paths (the slashes may come percent-encoded, inside a query or a body).
_SIGNED_PATH = re.compile(
    r"(?P<prefix>(?:/|%2F)artifacts-(?:downloads|uploads)(?:/|%2F))[^\s\"'<>?#&;,]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    text = _SIGNED_PATH.sub(lambda m: f"{m['prefix']}{REDACTED}", text)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m['name']}={REDACTED}", text)
    text = _GOOGLE_TOKEN.sub(REDACTED, text)
    return _known_secrets(text)


# Secrets the process holds whose shape no pattern knows (a basic password, a bearer
# token read from a file, a client's token): their values, redacted wherever they
# appear. Process-wide, as the log filter on the root handler is: every line of every
# library passes it. Shorter values are not listed (they would redact common words).
# Replaced, never changed in place: a thread may be iterating it meanwhile.
_KNOWN: frozenset[str] = frozenset()
MIN_SECRET_LENGTH = 6


def remember_secret(value: str | None) -> None:
    """Redact ``value`` (and its URL-encoded form) from every text from now on.

    >>> remember_secret("s3cret-pw/1"); redact("sent s3cret-pw/1 and s3cret-pw%2F1")
    'sent <redacted> and <redacted>'
    """
    global _KNOWN
    if value and len(value) >= MIN_SECRET_LENGTH and value not in _KNOWN:
        _KNOWN = _KNOWN | {value, quote(value, safe="")}


def _known_secrets(text: str) -> str:
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """``redact`` on every string in a JSON-shaped value (a ``/readyz`` answer).

    >>> redact_value({"url": "http://u:p@h/", "n": [1, "x"]})
    {'url': 'http://<redacted>@h/', 'n': [1, 'x']}
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    return value


def without_secret_params(url: str) -> str:
    """``url`` with the query parameters ``redact`` hides left out altogether (an upload
    URL's ``_state`` is upstream's session, not worth a line), userinfo redacted.

    >>> without_secret_params("https://u:p@r/v2/x/blobs/uploads/1?_state=abc&digest=sha256:1")
    'https://<redacted>@r/v2/x/blobs/uploads/1?digest=sha256:1'
    """
    base, _, query = url.partition("?")
    kept = [part for part in query.split("&") if part and not _SECRET_PARAM.fullmatch(part)]
    return redact(base) + ("?" + "&".join(kept) if kept else "")


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its formatted traceback) with secrets redacted.

    A traceback that held a secret is kept only as redacted text in ``exc_text``
    (which ``logging.Formatter`` prints) and ``exc_info`` is dropped, so that no
    formatter can render the original; a formatter must print ``exc_text``.
    """

    # Messages without arguments that were found clean (the request line's "request"),
    # not searched again; bounded, as a message could be built before logging.
    _CLEAN_LIMIT = 512

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._clean: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        plain = not record.args and type(record.msg) is str
        if plain and record.msg in self._clean and not _extras(record):
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        elif plain and len(self._clean) < self._CLEAN_LIMIT:
            self._clean.add(message)
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            clean = redact(text)
            if clean != text:
                record.exc_text, record.exc_info = clean, None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _extras(record: logging.LogRecord) -> bool:
    return bool(record.exc_info or record.exc_text or record.stack_info)
