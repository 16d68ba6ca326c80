"""The request line's fast path (``proxy.logs.event_record``) writes what the
standard ``logger.log(..., extra=)`` path writes, and handlers see a normal record."""

from __future__ import annotations

import asyncio
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
        # Cloud Logging's keys (message, severity, time), ours between them.
        assert list(json.loads(fast)) == ["message", "severity", "logger", *FIELDS, "time"]
        assert json.loads(fast)["severity"] == "INFO"


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


def test_lines_of_one_loop_pass_are_written_together_and_in_order() -> None:
    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    logs.configure("info", "json", stream=Stream())
    log = logging.getLogger("gar_proxy.test")
    try:

        async def pass_of_the_loop() -> int:
            for number in range(5):
                log.info("line %d", number)
            pending = len(writes)
            await asyncio.sleep(0)  # the loop runs the scheduled flush
            await asyncio.sleep(0)
            return pending

        assert asyncio.run(pass_of_the_loop()) == 0
        log.info("outside a loop")  # written at once
    finally:
        logging.getLogger().handlers.clear()
    assert len(writes) == 2
    events = [json.loads(line)["message"] for line in "".join(writes).splitlines()]
    assert events == [*(f"line {n}" for n in range(5)), "outside a loop"]


def test_a_clean_message_seen_before_does_not_let_a_secret_through() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    log = logging.getLogger("gar_proxy.test")
    try:
        log.info("request")
        log.info("request")
        log.info("request https://bob:%s@gar.example/v2/?_state=S3CRET", "hunter2")
        log.info("request https://bob:hunter2@gar.example/v2/?_state=S3CRET")
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert text.count('"message": "request"') == 2
    assert "hunter2" not in text and "S3CRET" not in text and text.count("<redacted>") == 4
