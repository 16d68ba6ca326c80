"""Logging set-up: structlog renders every stdlib record, as JSON or for a console.

Code logs through ``logging`` as before; ``extra={...}`` fields become keys of the
JSON object (``structlog.stdlib.ExtraAdder``). ``auto`` picks the console renderer
on a terminal and JSON otherwise (a container, a systemd unit, a CI log). JSON lines
use the keys Cloud Logging and the common collectors read, ``message``, ``severity``
(``DEBUG`` ... ``CRITICAL``, Cloud Logging's names) and ``time`` (RFC 3339), then ours::

    {"message": "request", "severity": "INFO", "logger": "gar_proxy.access",
     "method": "GET", ..., "time": "2026-12-01T20:10:50.123+00:00"}

(They were ``event``, ``level`` in lower case and ``timestamp``, which Cloud Logging
files as plain payload: every line showed as severity DEFAULT.)

Secrets never reach a record: tokens and passwords are not logged anywhere, and
URLs pass through ``proxy.redact.redact`` (an upload URL's ``_state`` is upstream's
session), and a filter on the handler redacts every record on its way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import sys
import threading
import time
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from proxy.redact import RedactingFilter, redact

# Libraries whose routine lines are noise for an operator: httpx logs every request
# at INFO, aiosqlite every statement at DEBUG, google-auth its refreshes.
_QUIET = ("httpx", "httpcore", "google", "urllib3", "hpack", "aiosqlite", "asyncio")
# uvicorn warns on every TLS ClientHello sent to a plain-HTTP port: podman and skopeo
# try TLS first on every command. That is a client probing, not a server fault.
_PROBE_MESSAGE = "Invalid HTTP request received"


# A record made by ``event_record`` carries its fields here too, for the fast render.
_FIELDS = "_gar_fields"
_templates: dict[tuple[str, int, str], dict[str, Any]] = {}
# Cloud Logging's LogSeverity names for the stdlib levels.
SEVERITY = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR",
            "critical": "CRITICAL", "exception": "ERROR", "notset": "DEFAULT"}  # fmt: skip


def _timestamp(logger: Any, name: str, event: EventDict) -> EventDict:
    # Milliseconds and an explicit offset: log pipelines sort and join on this.
    now = datetime.datetime.now(datetime.UTC)
    event["timestamp"] = now.isoformat(timespec="milliseconds")
    return event


def event_record(
    logger: logging.Logger, level: int, event: str, fields: dict[str, Any]
) -> logging.LogRecord:
    """The record ``logger.log(level, event, extra=fields)`` makes, for ``logger.handle``,
    without the caller lookup per call (the caller's place is looked up once per
    logger, level and event) and rendered by ``formatter`` without the record copy and
    processor chain: the request log line, written once per request, costs a third
    as much. Every handler (a test's ``caplog`` too) sees an ordinary record."""
    key = (logger.name, level, event)
    template = _templates.get(key)
    if template is None:
        path, line, function, _ = logger.findCaller(stacklevel=2)
        made = logger.makeRecord(logger.name, level, path, line, event, (), None, function)
        template = _templates[key] = dict(made.__dict__)
    record = logging.LogRecord.__new__(logging.LogRecord)
    values = record.__dict__
    values.update(template)
    values.update(fields)
    now = time.time()
    values["created"] = now
    values["msecs"] = int((now - int(now)) * 1000) + 0.0
    values["relativeCreated"] = template["relativeCreated"] + (now - template["created"]) * 1000
    thread = threading.get_ident()
    if thread != template["thread"]:
        values["thread"], values["threadName"] = thread, threading.current_thread().name
    values[_FIELDS] = fields
    return record


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


def _redacted_traceback(logger: Any, name: str, event: EventDict) -> EventDict:
    """A traceback ``RedactingFilter`` had to clean is in ``exc_text`` (its ``exc_info``
    dropped, as it held the secret): render that text instead of losing it."""
    record = event.get("_record")
    if record is not None and record.exc_text and not record.exc_info:
        event["exception"] = record.exc_text
    return event


def _cloud_keys(logger: Any, name: str, event: EventDict) -> EventDict:
    """structlog's ``event``/``level``/``timestamp`` as ``message``/``severity``/``time``,
    message first and time last, as the fast path writes them."""
    level = str(event.pop("level", "info"))
    renamed = {"message": event.pop("event", ""), "severity": SEVERITY.get(level, "DEFAULT")}
    renamed.update(event)
    renamed["time"] = renamed.pop("timestamp", None)
    return renamed


def _drop_color_message(logger: Any, name: str, event: EventDict) -> EventDict:
    """uvicorn passes an ANSI-coloured copy of its message as an extra field."""
    event.pop("color_message", None)
    return event


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, with a direct render of ``event_record``'s records: the
    same keys in the same order as the processor chain gives them."""

    def __init__(self, renderer: Processor, *, json_lines: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.renderer = renderer
        # What structlog's JSONRenderer does, without a new encoder per line.
        self.encode = json.JSONEncoder(default=repr).encode if json_lines else None
        self._second, self._prefix = -1, ""

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__.get(_FIELDS)
        if fields is None or record.exc_info or record.exc_text or record.stack_info:
            # The whole line: a record's extra fields are not in its message, which is
            # all ``RedactingFilter`` sees.
            return redact(super().format(record))
        level = record.levelname.lower()
        if self.encode is not None:
            return self.encode({
                "message": record.getMessage(),
                "severity": SEVERITY.get(level, "DEFAULT"),
                "logger": record.name,
                **fields,
                "time": self._timestamp(record.created),
            })  # fmt: skip
        event = {
            "event": record.getMessage(),
            "level": level,
            "logger": record.name,
            **fields,
            "timestamp": self._timestamp(record.created),
        }
        return str(self.renderer(None, level, event))

    def _timestamp(self, created: float) -> str:
        """As ``_timestamp`` writes it; the date and time up to the second change
        once a second."""
        second = int(created)
        if second != self._second:
            when = datetime.datetime.fromtimestamp(second, datetime.UTC)
            self._second, self._prefix = second, when.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"


class _BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, on the event loop, writes the lines of one loop pass
    together (one ``write(2)`` for all the requests the pass finished, not one per
    line); anywhere else (a thread, the CLI) at once. ``logging.shutdown`` flushes
    what a stopped loop left."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._flush_soon = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if self._flush_soon:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_soon = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._flush_soon = False
            text = "".join(self._pending)
            self._pending.clear()
            try:
                if text:
                    self.stream.write(text)
                if self.stream and hasattr(self.stream, "flush"):
                    self.stream.flush()
            except Exception:  # a closed pipe: as StreamHandler, report once, go on
                # (raising here would be logged by asyncio, and that log line would
                # schedule another failing flush: a spinning loop)
                self.handleError(logging.makeLogRecord({"msg": "writing log lines failed"}))


def formatter(fmt: str, *, colors: bool = False) -> logging.Formatter:
    pre_chain: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _timestamp,
        _redacted_traceback,
        _drop_color_message,
    ]
    renderer: Processor
    json_lines = fmt == "json"
    processors: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json_lines:
        pre_chain.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
        processors.append(_cloud_keys)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    return _Formatter(
        renderer,
        json_lines=json_lines,
        foreign_pre_chain=pre_chain,
        processors=[*processors, renderer],
    )


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Route every log record to ``stream`` (stderr) in format json, console or auto."""
    stream = stream or sys.stderr
    chosen = resolve_format(fmt, stream)
    handler = _BatchingHandler(stream)
    handler.setFormatter(formatter(chosen, colors=chosen == "console" and stream.isatty()))
    handler.addFilter(RedactingFilter())  # on the handler: sees every logger's records
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
