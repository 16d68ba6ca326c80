"""Logging set-up: structlog renders every stdlib record, as JSON or for a console.

Code logs through ``logging`` as before; ``extra={...}`` fields become keys of the
JSON object (``structlog.stdlib.ExtraAdder``). ``auto`` picks the console renderer
on a terminal and JSON otherwise (a container, a systemd unit, a CI log)::

    {"timestamp": "2026-12-01T20:10:50.123+00:00", "level": "info",
     "logger": "gar_proxy.access", "event": "request", "method": "GET", ...}

Secrets never reach a record: tokens and passwords are not logged anywhere, and
URLs pass through ``safe_url`` (an upload URL's ``_state`` is upstream's session).
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

# Libraries whose routine lines are noise for an operator: httpx logs every request
# at INFO, aiosqlite every statement at DEBUG, google-auth its refreshes.
_QUIET = ("httpx", "httpcore", "google", "urllib3", "hpack", "aiosqlite", "asyncio")
# uvicorn warns on every TLS ClientHello sent to a plain-HTTP port: podman and skopeo
# try TLS first on every command. That is a client probing, not a server fault.
_PROBE_MESSAGE = "Invalid HTTP request received"
# Query parameters that carry upstream session state or credentials.
_SECRET_PARAMS = frozenset({"_state", "access_token", "token", "X-Goog-Signature", "sig"})


def safe_url(url: str) -> str:
    """``url`` without query parameters that carry session state or credentials.

    >>> safe_url("https://r/v2/p/blobs/uploads/1?_state=abc&digest=sha256:1")
    'https://r/v2/p/blobs/uploads/1?digest=sha256:1'
    """
    base, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [p for p in query.split("&") if p.split("=", 1)[0] not in _SECRET_PARAMS]
    return base + ("?" + "&".join(kept) if kept else "")


def _timestamp(logger: Any, name: str, event: EventDict) -> EventDict:
    # Milliseconds and an explicit offset: log pipelines sort and join on this.
    now = datetime.datetime.now(datetime.UTC)
    event["timestamp"] = now.isoformat(timespec="milliseconds")
    return event


class _DemoteProbes(logging.Filter):
    """uvicorn's warning about a TLS probe becomes a debug line (dropped unless debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith(_PROBE_MESSAGE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def resolve_format(fmt: str, stream: TextIO) -> str:
    if fmt == "auto":
        return "console" if stream.isatty() else "json"
    return "console" if fmt == "text" else fmt


def formatter(fmt: str, *, colors: bool = False) -> logging.Formatter:
    pre_chain: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _timestamp,
    ]
    renderer: Processor
    if fmt == "json":
        pre_chain.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Route every log record to ``stream`` (stderr) in format json, console or auto."""
    stream = stream or sys.stderr
    chosen = resolve_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(chosen, colors=chosen == "console" and stream.isatty()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.filters[:] = [
        f for f in uvicorn_errors.filters if not isinstance(f, _DemoteProbes)
    ]
    uvicorn_errors.addFilter(_DemoteProbes())
