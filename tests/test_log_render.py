"""The request line's fast path (``proxy.logs.event_record``) writes what the
standard ``logger.log(..., extra=)`` path writes, and handlers see a normal record."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from proxy import logs

FIELDS = {
    "method": "HEAD", "route": "manifest", "repository": "p/r/app", "reference": "1.0",
    "status": 200, "bytes": 0, "duration_ms": 1.5, "cache": "hit", "upstream_calls": 0,
    "request_id": "0123456789abcdef", "identity": "ci",
}  # fmt: skip
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_fast_record_renders_as_the_standard_one(fmt: str) -> None:
    stream = io.StringIO()
    logs.configure("info", fmt, stream=stream)
    try:
        log = logging.getLogger("gar_proxy.access")
        log.log(logging.INFO, "request", extra=FIELDS)
        log.handle(logs.event_record(log, logging.INFO, "request", FIELDS))
    finally:
        logging.getLogger().handlers.clear()
    standard, fast = (_TIME.sub("T", line) for line in stream.getvalue().splitlines())
    assert fast == standard
    if fmt == "json":
        assert list(json.loads(fast)) == ["event", "level", "logger", *FIELDS, "timestamp"]


def test_handlers_see_the_fields_caller_and_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gar_proxy.access")
    log = logging.getLogger("gar_proxy.access")
    for _ in range(2):  # the second comes from the template the first one made
        log.handle(logs.event_record(log, logging.INFO, "caller test", FIELDS))
    first, second = caplog.records
    assert second.__dict__["identity"] == "ci" and second.getMessage() == "caller test"
    assert second.levelname == "INFO" and second.name == "gar_proxy.access"
    assert second.funcName == "test_handlers_see_the_fields_caller_and_time"
    assert second.filename == "test_log_render.py"
    assert second.created >= first.created and second.msecs < 1000
