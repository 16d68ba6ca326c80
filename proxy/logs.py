"""Logging set-up: plain text or one JSON object per line; secrets never logged."""

from __future__ import annotations

import json
import logging
import sys
import time

from proxy.redact import RedactingFilter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:  # RedactingFilter leaves a cleaned traceback here
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # on the handler: sees every logger's records
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # google-auth and httpx log request details at DEBUG; keep them out of our stream.
    for noisy in ("httpx", "httpcore", "google", "urllib3", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
