"""One puller in its own process: ``python -m bench.puller URL REPO TAG [CA_FILE]``.

The herd scenario (8 concurrent cold pulls) runs each puller as a process, as eight
CI runners or laptops would be: eight pullers in one Python process share one GIL,
and that process, not the server under test, set the pace (gar-proxy measured the same
as pulling the upstream directly). It imports and connects first, prints ``ready``,
pulls when a line arrives on stdin, and prints ``pulled BYTES``. ``CA_FILE`` is the
test CA an HTTPS upstream's certificate comes from (``--upstream-tls``).
"""

from __future__ import annotations

import ssl
import sys

from bench.client import new_client, pull_image, run_async


async def _main(url: str, repo: str, tag: str, ca_file: str | None = None) -> int:
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    async with new_client(verify=verify) as client:
        print("ready", flush=True)
        sys.stdin.readline()
        return await pull_image(client, url, repo, tag)


if __name__ == "__main__":
    received = run_async(_main(*sys.argv[1:5]))
    print(f"pulled {received}", flush=True)
