"""Bounds on client connections: how many are open (in all, and per client address),
and why the proxy ended those it ended, told in one log line per ``LOG_INTERVAL``
however many there were (a flood of 2,000 silent connections is one line, not 2,000).

The timeouts themselves run in ``proxy.http.guarded``; this is the accounting they
share across the connections of one server.

>>> limits = ConnectionLimits(max_connections=2, max_per_client=1)
>>> open_ = Connections(limits)
>>> open_.admit("10.0.0.1"), open_.admit("10.0.0.1"), open_.admit("10.0.0.2")
(None, 'per-client cap', None)
>>> open_.admit("10.0.0.3"), open_.total
('total cap', 2)

One IPv6 host is its /64 (``client_key``): a new address of it is no new client.

>>> open_ = Connections(ConnectionLimits(max_per_client=1))
>>> open_.admit("2001:db8::1"), open_.admit("2001:db8::2"), open_.admit("2001:db8:0:1::1")
(None, 'per-client cap', None)

A front proxy listed in ``server.trusted_proxies`` carries many clients on its
connections: the per-client cap does not apply to it (the total still does).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import logging
import math
from dataclasses import dataclass

from proxy.config import ServerSettings
from proxy.config.values import Network, client_key

log = logging.getLogger("gar_proxy.connections")
LOG_INTERVAL = 10.0  # seconds: at most one line per this long, with the counts


@dataclass(frozen=True)
class ConnectionLimits:
    """The ``server.*`` settings that bound connections; a timeout of 0 is off."""

    header_timeout: float = 20.0
    idle_timeout: float = 15.0
    body_timeout: float = 60.0
    body_min_rate: int = 500  # bytes per second; 0: off
    body_rate_grace: float = 20.0
    tls_handshake_timeout: float = 10.0
    send_timeout: float = 60.0
    max_connections: int = 4096
    max_per_client: int = 512
    trusted_proxies: tuple[Network, ...] = ()

    def is_trusted_proxy(self, address: str) -> bool:
        return bool(self.trusted_proxies) and _in(address, self.trusted_proxies)

    @classmethod
    def of(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(
            header_timeout=server.header_timeout,
            idle_timeout=server.idle_timeout,
            body_timeout=server.body_timeout,
            body_min_rate=server.body_min_rate,
            body_rate_grace=server.body_rate_grace,
            tls_handshake_timeout=server.tls_handshake_timeout,
            send_timeout=server.send_timeout,
            max_connections=server.max_connections,
            max_per_client=server.max_connections_per_client,
            trusted_proxies=server.trusted_proxies,
        )


@functools.lru_cache(maxsize=4096)
def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class Connections:
    """Open connections by client address, and a tally of the ones ended, logged."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.total = 0
        self._by_address: dict[str, int] = {}
        self.ended: collections.Counter[str] = collections.Counter()  # since start
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._flush: asyncio.TimerHandle | None = None

    def admit(self, address: str) -> str | None:
        """Count a new connection; or the reason it is refused (then not counted)."""
        if self.total >= self.limits.max_connections:
            return "total cap"
        key = client_key(address)
        count = self._by_address.get(key, 0)
        if count >= self.limits.max_per_client and not self.limits.is_trusted_proxy(address):
            return "per-client cap"
        self._by_address[key] = count + 1
        self.total += 1
        return None

    def release(self, address: str) -> None:
        key = client_key(address)
        count = self._by_address.get(key, 0) - 1
        if count > 0:
            self._by_address[key] = count
        else:
            self._by_address.pop(key, None)
        self.total -= 1

    def note(self, reason: str) -> None:
        """A connection refused or ended, for the next summary line."""
        self.ended[reason] += 1
        self._unlogged[reason] += 1
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.summary()
                return
            self._flush = loop.call_later(LOG_INTERVAL, self.summary)

    def summary(self) -> None:
        """Log what was noted since the last line (one line)."""
        self._flush = None
        if not self._unlogged:
            return
        counts = ", ".join(f"{count} {reason}" for reason, count in self._unlogged.most_common())
        total = sum(self._unlogged.values())
        self._unlogged.clear()
        log.warning(
            "connections refused or ended in the last %d s: %d (%s); %d open",
            LOG_INTERVAL,
            total,
            counts,
            self.total,
            extra={"connections_ended": total, "connections_open": self.total},
        )


class BodyRate:
    """How fast one request body arrives: bytes since its first, and how long reading
    was paused meanwhile (the app not reading: not the client's time).

    >>> rate = BodyRate()
    >>> rate.due(500, 20.0)  # no byte yet: body_timeout's business
    inf
    >>> rate.received(1000, now=100.0, read_paused=False)
    >>> rate.due(500, 20.0)  # first byte + grace + 1000 / 500
    122.0
    >>> rate.received(100, now=110.0, read_paused=True)  # the app stopped reading
    >>> rate.due(500, 20.0)
    inf
    >>> rate.paused(now=115.0, read_paused=False)  # 5 s paused: not the client's
    >>> rate.due(500, 20.0)
    127.2
    """

    __slots__ = ("_bytes", "_paused_for", "_paused_since", "_start")

    def __init__(self) -> None:
        self._start: float | None = None
        self._bytes = 0
        self._paused_for = 0.0
        self._paused_since: float | None = None

    def received(self, size: int, now: float, read_paused: bool) -> None:
        if self._start is None:
            self._start = now
        self._bytes += size
        self.paused(now, read_paused)

    def paused(self, now: float, read_paused: bool) -> None:
        """Note whether reading is paused now; a pause counts until it is seen ended
        (a little long, in the client's favour)."""
        if self._paused_since is not None:
            self._paused_for += now - self._paused_since
        self._paused_since = now if read_paused else None

    def due(self, rate: int, grace: float) -> float:
        """First byte + grace + bytes / rate, later by every pause; inf before the first
        byte (``body_timeout`` times that) and while paused."""
        if self._start is None or self._paused_since is not None:
            return math.inf
        return self._start + self._paused_for + grace + self._bytes / rate
