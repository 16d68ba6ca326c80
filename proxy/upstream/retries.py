"""When an upstream call is tried again, and after how long: the retry policy alone.

Another try follows a transport failure and an answer of server trouble or a rate
limit (``errors.RETRYABLE_STATUSES``), up to ``transport.retries`` times, for a call
whose body can be sent again. The pause is exponential backoff with full jitter,
capped at ``transport.backoff_max``, and never shorter than the upstream's own
``Retry-After``; a ``Retry-After`` beyond ``MAX_RETRY_AFTER`` is not waited for (the
429 goes to the client, which can wait without holding a connection of ours)::

    >>> policy = RetryPolicy(retries=2, backoff_base=0.5, backoff_max=30.0)
    >>> policy.wait(503, None, attempt=0, now=0.0), policy.wait(503, "7", attempt=1, now=0.0)
    (0.0, 7.0)
    >>> policy.wait(503, None, attempt=2, now=0.0), policy.wait(404, None, attempt=0, now=0.0)
    (None, None)
    >>> policy.wait(429, "120", attempt=0, now=0.0) is None
    True
    >>> policy.delay(3, None, jitter=lambda low, high: high), policy.delay(1, 9.0)
    (4.0, 9.0)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from proxy.config import TransportSettings
from proxy.upstream.calls import retry_after_seconds
from proxy.upstream.errors import RETRYABLE_STATUSES

# A wait longer than this is not worth holding a client for; pass the 429 on instead.
MAX_RETRY_AFTER = 60.0
Jitter = Callable[[float, float], float]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    backoff_base: float
    backoff_max: float

    @classmethod
    def of(cls, transport: TransportSettings) -> RetryPolicy:
        return cls(transport.retries, transport.backoff_base, transport.backoff_max)

    def may_retry(self, attempt: int) -> bool:
        """Whether a call that has been retried ``attempt`` times may be tried again."""
        return attempt < self.retries

    def wait(
        self, status: int, retry_after: str | None, *, attempt: int, now: float
    ) -> float | None:
        """After an answer with ``status``: None to hand it back, else the least pause
        before another try (``Retry-After`` read against ``now``, epoch seconds)."""
        if status not in RETRYABLE_STATUSES or not self.may_retry(attempt):
            return None
        wait = retry_after_seconds(retry_after, now)
        if wait is not None and wait > MAX_RETRY_AFTER:
            return None
        return wait or 0.0

    def delay(self, attempt: int, at_least: float | None, jitter: Jitter = random.uniform) -> float:
        """The pause before try ``attempt`` (1 for the first retry): full jitter spreads
        a herd of retries; never shorter than what the upstream asked for."""
        ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
        return max(jitter(0, ceiling), at_least or 0.0)
