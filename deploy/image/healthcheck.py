"""The container's HEALTHCHECK: GET /healthz on the address the proxy was told to listen on.

``healthcheck.py /readyz`` checks readiness instead (Kubernetes exec probes, which keep
the proxy on loopback where an httpGet probe would need it on the pod's address).

It reads the settings the way ``gar-proxy serve`` does (``GAR_PROXY_CONFIG`` file, then
``GAR_PROXY_LISTEN``), so moving the port moves the check with it. A ``--listen`` flag
on the command line is invisible here: in a container, set ``GAR_PROXY_LISTEN``.
A wildcard address is checked on loopback, which every bind address includes.
Exit 0 healthy, 1 not (Docker's contract).
"""

from __future__ import annotations

import sys
import urllib.request

from proxy.config import ConfigError, load_settings

WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
TIMEOUT_SECONDS = 3.0


def probe_url(path: str) -> str:
    settings = load_settings()
    host = WILDCARDS.get(settings.server.host, settings.server.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.server.port}{path}"


def main(argv: list[str]) -> int:
    try:
        url = probe_url(argv[0] if argv else "/healthz")
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return 0 if response.status == 200 else 1
    except (ConfigError, OSError) as error:  # HTTPError (503), URLError, timeouts
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
