"""One puller in its own process: ``python -m bench.puller URL REPO TAG``.

The herd scenario (8 concurrent cold pulls) runs each puller as a process, as eight
CI runners or laptops would be: eight pullers in one Python process share one GIL,
and that process, not the server under test, set the pace (gar-proxy measured the same
as pulling the upstream directly). It imports and connects first, prints ``ready``,
pulls when a line arrives on stdin, and prints ``pulled BYTES``.
"""

from __future__ import annotations

import sys

from bench.client import new_client, pull_image, run_async


async def _main(url: str, repo: str, tag: str) -> int:
    async with new_client() as client:
        print("ready", flush=True)
        sys.stdin.readline()
        return await pull_image(client, url, repo, tag)


if __name__ == "__main__":
    received = run_async(_main(*sys.argv[1:4]))
    print(f"pulled {received}", flush=True)
