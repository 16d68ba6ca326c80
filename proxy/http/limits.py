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
