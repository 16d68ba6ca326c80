"""``gar-proxy``: serve, config check, warm, gc, verify, push, ls, refresh, purge,
healthcheck, doctor;
vulns, sbom, cleanup-preview, where.

Common options go before or after the command (``gar-proxy serve --config x.toml``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, Settings, load_settings
from proxy.oci.errors import RegistryError


def _version() -> str:
    try:
        return version("gar-proxy")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Given after the command, an option must not reset what was given before it.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--config", type=Path, default=default, help="TOML settings file")
    parser.add_argument("--cache-dir", default=default, help="cache directory (cache.dir)")
    parser.add_argument("--upstream", default=default, help="upstream URL (upstream.url)")
    parser.add_argument(
        "--auth", default=default, help="gcp, basic, bearer or none (upstream.auth)"
    )
    parser.add_argument(
        "--offline", action="store_const", const="true", default=default, help="never call upstream"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gar-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gar-proxy {_version()}")
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        _common(sub, top=False)
        return sub

    serve = command("serve", "run the proxy")
    serve.add_argument("--listen", help="HOST:PORT (server.listen); port 0 picks a free one")
    config = command(
        "config", "check: the effective settings (secrets redacted) and whether they work; "
        "example: every setting with its default, as TOML",
    )  # fmt: skip
    config.add_argument("action", choices=["check", "example"])
    command("gc", "evict least recently used blobs down to the size cap")
    command("verify", "re-hash every cached blob; remove corrupt ones")
    warm = command("warm", "pre-pull an image into the cache, or every image files name")
    warm.add_argument(
        "image", nargs="?", help="[LOCATION-docker.pkg.dev/]PROJECT/REPO/IMAGE[:TAG|@DIGEST]"
    )
    warm.add_argument(
        "-f", "--file", action="extend", nargs="+", type=Path, default=[], metavar="PATH",
        help="Kubernetes/Helm output, Compose, GitHub Actions, GitLab CI files, Dockerfiles;"
        " directories are walked",
    )  # fmt: skip
    warm.add_argument(
        "--dry-run", action="store_true", help="with -f: print the references, pull nothing"
    )
    warm.add_argument(
        "--build-arg", action="append", default=[], metavar="NAME[=VALUE]",
        help="with -f: a Dockerfile's ARG, as docker build takes it (NAME alone: from the"
        " environment)",
    )  # fmt: skip
    warm.add_argument(
        "--env-file", action="append", default=[], type=Path, metavar="PATH",
        help="with -f: Compose's variables from PATH instead of each file's .env, as docker"
        " compose --env-file (the environment still wins)",
    )  # fmt: skip
    warm.add_argument(
        "--platform", action="append", default=[], help="os/arch[/variant]; default: this host's"
    )
    warm.add_argument("--all-platforms", action="store_true", help="every platform of an index")
    warm.add_argument("--pin", action="store_true", help="never evict what this image needs")
    ls = command("ls", "list cached repositories, tags and sizes")
    ls.add_argument("prefix", nargs="?", default="", help="only repositories under this")
    ls.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    health = command("healthcheck", "exit 0 if the proxy's listener answers PATH with 200")
    health.add_argument("path", nargs="?", default="/healthz", help="/healthz (default), /readyz")
    from proxy.commands import doctor

    doctor.add_parser(command)
    push = command("push", "push an OCI image layout straight to upstream")
    push.add_argument("layout", help="OCI_LAYOUT_DIR[:TAG]")
    push.add_argument("target", help="[LOCATION-docker.pkg.dev/]PROJECT/REPO/IMAGE[:TAG]")
    from proxy.commands import maintenance, reports

    maintenance.add_parsers(command)
    reports.add_parsers(command)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cache.dir": args.cache_dir,
        "upstream.url": args.upstream,
        "upstream.auth": args.auth,
        "cache.offline": args.offline,
        "server.listen": getattr(args, "listen", None),
    }


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides=_overrides(args))


def _say(message: str) -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _preflight(name: str, settings: Settings) -> bool:
    """The files a command needs (credentials, CA, cache dir), checked before anything
    opens; a problem is one line on stderr."""
    from proxy.commands import preflight

    try:
        preflight.check(settings)
    except preflight.StartupError as error:
        print(f"gar-proxy {name}: {error}", file=sys.stderr)
        return False
    return True


def _preflight_files(name: str, settings: Settings) -> bool:
    """``_preflight`` without the cache dir (which that check creates)."""
    from proxy.commands import preflight

    try:
        preflight.check_credentials(settings)
        preflight.check_ca_file(settings.upstream.ca_file)
    except preflight.StartupError as error:
        print(f"gar-proxy {name}: {error}", file=sys.stderr)
        return False
    return True


def _on_services(
    name: str, settings: Settings, work: Callable[[Any], Awaitable[int]], failed: int = 1
) -> int:
    """Run a command over the services the server uses; its errors are one line."""
    from proxy.services.container import open_services

    async def main() -> int:
        async with open_services(settings) as services:
            return await work(services)

    if not _preflight(name, settings):
        return 1
    try:
        return asyncio.run(main())
    except (RegistryError, ValueError) as error:
        print(f"gar-proxy {name}: {getattr(error, 'message', error)}", file=sys.stderr)
        return failed


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config" and args.action == "example":  # no settings needed
        from proxy.config.example import render

        print(render(), end="")
        return 0
    try:
        settings = _settings(args)
    except ConfigError as error:
        print(f"gar-proxy: config: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from proxy.commands import serve

        return serve.run(settings)
    if args.command == "config":
        from proxy.commands import config_check
        from proxy.config.sources import sources

        found = sources(args.config, os.environ, _overrides(args))
        return config_check.run(settings, found, _say)
    if args.command == "healthcheck":
        from proxy.commands import healthcheck

        return healthcheck.run(settings, args.path)
    if args.command == "doctor":
        from proxy.commands import doctor

        return doctor.run(args, settings, _say)
    if args.command == "push":
        from proxy.commands import push_layout

        if not _preflight("push", settings):
            return 1
        return asyncio.run(push_layout.run(settings, args.layout, args.target))
    if args.command == "warm":
        from proxy.commands import warm
        from proxy.imagefiles.variables import parse_build_args
        from proxy.oci.platform import Platform

        if bool(args.image) == bool(args.file):
            print("gar-proxy warm: give an IMAGE or -f PATH (not both)", file=sys.stderr)
            return 2
        if args.image and (args.build_arg or args.env_file or args.dry_run):
            print("gar-proxy warm: --build-arg, --env-file, --dry-run go with -f", file=sys.stderr)
            return 2

        async def warming(services: Any) -> int:
            platforms = [Platform.parse(p) for p in args.platform]
            if args.file:
                return await warm.run_files(
                    services, args.file, platforms, pin=args.pin, all_platforms=args.all_platforms,
                    dry_run=args.dry_run, say=_say, warn=_warn, env_files=args.env_file,
                    build_args=parse_build_args(args.build_arg, os.environ), environ=os.environ,
                )  # fmt: skip
            return await warm.run(
                services, args.image, platforms, pin=args.pin,
                all_platforms=args.all_platforms, say=_say,
            )  # fmt: skip

        return _on_services("warm", settings, warming)
    if args.command == "ls":
        from proxy.commands import ls

        if not settings.cache.dir.expanduser().exists():  # a listing creates no cache...
            if not _preflight_files("ls", settings):  # ...but checks the other files
                return 1
            _say(f"nothing cached: no cache at {settings.cache.dir}")
            return 0
        return _on_services(
            "ls", settings, lambda found: ls.run(found, args.prefix, args.json, _say)
        )
    from proxy.commands import gc, maintenance, reports, verify

    if args.command in maintenance.COMMANDS:
        return maintenance.run(
            args, settings, lambda *a: _on_services(a[0], settings, *a[1:]), _say, _warn
        )
    if args.command in reports.COMMANDS:
        return reports.run(args, lambda *a: _on_services(a[0], settings, *a[1:]), _say)

    chosen = {"gc": gc.run, "verify": verify.run}[args.command]
    return _on_services(args.command, settings, lambda services: chosen(services, _say))
