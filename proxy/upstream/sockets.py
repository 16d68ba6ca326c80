"""TCP keep-alive on every upstream connection (httpx's pool and the lean path's).

A NAT or firewall between the proxy and GAR forgets a flow that carried nothing for a
while (minutes on cloud NATs) and then drops its packets without a reset. A pooled
connection it forgot looks alive until a request waits its whole read timeout on it,
and a long pull stalled upstream would hang the same way. With keep-alive the kernel
probes a connection idle for ``IDLE`` seconds every ``INTERVAL`` seconds and gives up
after ``COUNT`` unanswered probes (about two minutes for a dead peer), so such a
connection fails as a reset instead. The original design's client used 60 s.

``OPTIONS`` is the form httpx's transport takes (``socket_options``); ``keep_alive``
sets the same on a socket of our own::

    >>> import socket
    >>> with socket.socket() as sock:
    ...     keep_alive(sock)
    ...     sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    True
"""

from __future__ import annotations

import socket
from typing import Any

IDLE = 60
INTERVAL = 10
COUNT = 6


def _options() -> list[tuple[int, int, int]]:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    # Linux and most others; macOS names the idle time TCP_KEEPALIVE.
    for name, value in (
        ("TCP_KEEPIDLE", IDLE),
        ("TCP_KEEPALIVE", IDLE),
        ("TCP_KEEPINTVL", INTERVAL),
        ("TCP_KEEPCNT", COUNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    return options


OPTIONS = _options()


def keep_alive(sock: Any) -> None:
    """``OPTIONS`` on ``sock`` (a socket, or the one an asyncio transport reports)."""
    for level, option, value in OPTIONS:
        sock.setsockopt(level, option, value)
