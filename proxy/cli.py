"""``gar-proxy``: serve, config check, gc, verify, warm, push."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, Settings, describe, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gar-proxy", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (see config.example.toml)")
    parser.add_argument("--cache-dir", help="cache directory (cache.dir)")
    parser.add_argument("--upstream", help="upstream URL template (upstream.url)")
    parser.add_argument("--auth", help="gcp, basic or none (upstream.auth)")
    parser.add_argument("--offline", action="store_const", const="true", help="never call upstream")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--listen", help="HOST:PORT (server.listen); port 0 picks a free one")
    config = commands.add_parser("config", help="settings")
    config.add_argument("action", choices=["check"])
    commands.add_parser("gc", help="evict least recently used blobs down to the size cap")
    commands.add_parser("verify", help="re-hash every cached blob; remove corrupt ones")
    warm = commands.add_parser("warm", help="pre-pull an image into the cache")
    warm.add_argument("image", help="[LOCATION-docker.pkg.dev/]PROJECT/REPO/IMAGE[:TAG|@DIGEST]")
    warm.add_argument("--platform", action="append", default=[], help="os/arch[/variant]")
    warm.add_argument("--pin", action="store_true", help="never evict what this image needs")
    push = commands.add_parser("push", help="push an OCI image layout straight to upstream")
    push.add_argument("layout", help="OCI_LAYOUT_DIR[:TAG]")
    push.add_argument("target", help="[LOCATION-docker.pkg.dev/]PROJECT/REPO/IMAGE[:TAG]")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "cache.dir": args.cache_dir,
        "upstream.url": args.upstream,
        "upstream.auth": args.auth,
        "cache.offline": args.offline,
        "server.listen": getattr(args, "listen", None),
    }
    return load_settings(args.config, overrides=overrides)


def serve(settings: Settings) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.logs import configure

    configure(settings.server.log_level, settings.server.log_format)
    http: Any = "auto"
    try:  # blob bodies go file -> socket in the kernel (proxy/http/server.py)
        from proxy.http.server import ZeroCopyProtocol

        http = ZeroCopyProtocol
    except ImportError as error:  # no httptools, or a uvicorn reorganised
        logging.getLogger("gar_proxy").warning("zero-copy blob sends off: %s", error)
    family = socket.AF_INET6 if ":" in settings.server.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets of that
    # protocol, and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.server.host, settings.server.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(settings),
        http=http,
        log_config=None,
        access_log=settings.server.log_level == "debug",
        timeout_graceful_shutdown=10,
        server_header=False,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                # One line that tools (and tests, with port 0) can wait for.
                print(f"gar-proxy listening on http://{host}:{port}", flush=True)

    # Server.run, not asyncio.run(serve()): it builds the loop uvicorn picked (uvloop
    # when installed); asyncio.run would always use the slower stdlib loop.
    Server(config).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as error:
        print(f"gar-proxy: config: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    if args.command == "config":
        width = max(len(key) for key, _ in describe(settings))
        for key, value in describe(settings):
            print(f"{key:<{width}}  {value}")
        return 0
    if args.command == "push":
        from proxy.push import run as push

        pushed: int = asyncio.run(push(settings, args.layout, args.target))
        return pushed
    from proxy.maintenance import run

    code: int = asyncio.run(run(args.command, settings, args))
    return code
