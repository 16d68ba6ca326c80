"""``gar-proxy healthcheck [PATH]``: GET ``/healthz`` (or PATH, e.g. ``/readyz``) on the
address this proxy's settings say it listens on; exit 0 on a 200, 1 otherwise (Docker's
HEALTHCHECK contract, and a Kubernetes exec probe's).

It reads the settings as ``serve`` does (``--config``/``GAR_PROXY_CONFIG``, then
``GAR_PROXY_*``), so moving the port moves the check with it; a ``--listen`` given to
``serve`` on its command line is invisible here (in a container, set
``GAR_PROXY_SERVER_LISTEN``). A wildcard bind is checked on loopback, which it includes.

With ``tls.cert_file`` set the listener speaks only TLS, so the check does too. It does
not verify the certificate: it connects to the proxy's own address on this host, sends
nothing secret (``/healthz`` and ``/readyz`` need no credentials) and reads only a status
code, while a verified check would fail for reasons that are not the proxy's health: a
certificate for a DNS name never matches 127.0.0.1, and during a rotation the files on
disk are newer than what the listener serves until its next reload
(``tls.reload_interval``).

    >>> probe_url(("0.0.0.0", 5000), tls=False, path="/readyz")
    'http://127.0.0.1:5000/readyz'
    >>> probe_url(("::", 5443), tls=True, path="/healthz")
    'https://[::1]:5443/healthz'
"""

from __future__ import annotations

import http.client
import ssl
import sys
import urllib.parse

from proxy.config import Settings

WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
TIMEOUT_SECONDS = 3.0
HEADERS = {"User-Agent": "gar-proxy healthcheck"}


def probe_url(listen: tuple[str, int], *, tls: bool, path: str) -> str:
    host = WILDCARDS.get(listen[0], listen[0])
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{listen[1]}{path}"


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def status(url: str, timeout: float = TIMEOUT_SECONDS) -> int:
    """The HTTP status of ``GET url`` (no redirects followed)."""
    parts = urllib.parse.urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=_unverified()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request(
            "GET", parts.path or "/", headers={"User-Agent": "gar-proxy healthcheck"}
        )
        return connection.getresponse().status
    finally:
        connection.close()


def run(settings: Settings, path: str) -> int:
    if not path.startswith("/"):
        print(f"gar-proxy healthcheck: {path!r}: give a path such as /readyz", file=sys.stderr)
        return 2
    url = probe_url(settings.server.listen, tls=settings.tls.cert_file is not None, path=path)
    try:
        answer = status(url)
    except (OSError, http.client.HTTPException) as error:  # refused, timeout, TLS failure
        print(f"gar-proxy healthcheck: {url}: {error}", file=sys.stderr)
        return 1
    if answer != 200:
        print(f"gar-proxy healthcheck: {url}: HTTP {answer}", file=sys.stderr)
        return 1
    return 0
