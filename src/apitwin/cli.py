"""The `apitwin` command line: errors become a message and an exit status, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from apitwin import __version__
from apitwin.config import Settings, TwinConfig, load_config, twin_for_spec
from apitwin.errors import ApitwinError, ConfigError, SpecError
from apitwin.spec.loader import load_spec

EXIT_USAGE = 2
TOKEN_ENV = "APITWIN_ADMIN_TOKEN"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apitwin",
        description="Serve a working twin of a partner platform from its OpenAPI spec.",
    )
    parser.add_argument("--version", action="version", version=f"apitwin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="show what a twin of SPEC will serve, and its warnings")
    check.add_argument(
        "spec", type=Path, nargs="?", help="OpenAPI 3.x or Swagger 2.0 file (JSON or YAML)"
    )
    check.add_argument(
        "--config",
        "-c",
        type=Path,
        help="apitwin.yaml: check each twin it lists, with its corrections",
    )
    _spec_root_option(check)

    serve = sub.add_parser("serve", help="serve twins of one or more specs over HTTP")
    serve.add_argument(
        "specs",
        type=Path,
        nargs="*",
        metavar="SPEC",
        help="OpenAPI 3.x or Swagger 2.0 files (or use --config)",
    )
    serve.add_argument("--config", "-c", type=Path, help="apitwin.yaml listing twins")
    _server_options(serve)
    serve.add_argument("--base-path", help="serve under this path instead of the spec's server URL")
    serve.add_argument(
        "--auth",
        choices=["strict", "lenient"],
        help="lenient: unknown credentials act as the default connection",
    )
    _spec_root_option(serve)
    _log_options(serve)

    demo = sub.add_parser("demo", help="serve the bundled example twin")
    _server_options(demo)
    _log_options(demo)

    sub.add_parser("schema", help="print the JSON Schema of apitwin.yaml (for editor completion)")

    mcp = sub.add_parser("mcp", help="MCP over stdio, driving a running apitwin server")
    mcp.add_argument(
        "--server",
        default="http://127.0.0.1:8000",
        help="apitwin server to drive (default http://127.0.0.1:8000)",
    )
    mcp.add_argument("--admin-token", help="its admin token (env APITWIN_ADMIN_TOKEN)")
    _listen_command(sub)
    _init_command(sub)
    return parser


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument(
        "--db",
        help="SQLite file for state (default apitwin.db; ':memory:' keeps nothing), or a "
        "postgresql:// URL shared by several replicas",
    )
    parser.add_argument("--seed", type=int, help="seed for generated data (default 0)")
    parser.add_argument(
        "--admin-token",
        help="bearer token for the admin API and MCP "
        "(env APITWIN_ADMIN_TOKEN; required to bind beyond loopback)",
    )


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="request log on stderr: text for people, json for one object per line (default text)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="info logs one line per request; warning only problems (default info)",
    )


def _spec_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec-root",
        type=Path,
        help="folder that $refs may read from (default: the spec's own folder)",
    )


def example_spec() -> Path:
    return Path(str(resources.files("apitwin.examples") / "expert-network" / "openapi.yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command in ("serve", "demo"):
            settings = settings_from(args)
            return cmd_serve(settings, log_format=args.log_format, log_level=args.log_level)
        if args.command == "schema":
            return cmd_schema()
        if args.command == "mcp":
            return cmd_mcp(args)
        if args.command == "listen":
            return cmd_listen(args)
        if args.command == "init":
            return cmd_init(args)
    except SpecError as exc:
        print(f"apitwin: cannot serve this spec; {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ApitwinError as exc:
        print(f"apitwin: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


def settings_from(args: argparse.Namespace) -> Settings:
    """Defaults < config file < command line."""
    if args.command == "demo":
        base = load_config(example_spec().parent / "apitwin.yaml")
    elif getattr(args, "config", None):
        if args.specs:
            raise ApitwinError("give either SPEC files or --config, not both")
        base = load_config(args.config)
    elif args.specs:
        options: dict[str, Any] = {"spec_root": args.spec_root}
        if args.base_path:
            options["base_path"] = args.base_path
        if args.auth:
            options["auth"] = args.auth
        twins = [twin_for_spec(path, **options) for path in args.specs]
        base = Settings(twins=tuple(_unique_names(twins)))
    else:
        raise ApitwinError("name a SPEC file to serve, or --config apitwin.yaml")
    if args.seed is not None:
        base = Settings(
            twins=tuple(replace(t, seed=args.seed) for t in base.twins),
            host=base.host,
            port=base.port,
            db=base.db,
            admin_token=base.admin_token,
            limits=base.limits,
        )
    settings = Settings(
        twins=base.twins,
        host=args.host or base.host,
        port=args.port if args.port is not None else base.port,
        db=args.db or (base.db if base.source and args.command != "demo" else "apitwin.db"),
        admin_token=args.admin_token or os.environ.get(TOKEN_ENV) or base.admin_token,
        source=base.source,
        limits=base.limits,
    )
    check_exposure(settings)
    return settings


def check_exposure(settings: Settings) -> None:
    """Beyond loopback, the control plane must not be open to whoever can reach the port."""
    if not is_loopback(settings.host) and not settings.admin_token:
        raise ApitwinError(
            f"binding to {settings.host} exposes the admin API and MCP beyond this machine; "
            f"set --admin-token (or {TOKEN_ENV}) first"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _unique_names(twins: list[TwinConfig]) -> list[TwinConfig]:
    seen: dict[str, int] = {}
    result = []
    for twin in twins:
        seen[twin.name] = seen.get(twin.name, 0) + 1
        count = seen[twin.name]
        result.append(replace(twin, name=f"{twin.name}-{count}") if count > 1 else twin)
    return result


def cmd_check(args: argparse.Namespace) -> int:
    from apitwin.report import describe_spec

    if args.config:
        from apitwin.spec.refs import SpecLimits

        settings = load_config(args.config)
        spec_limits = SpecLimits(max_bytes=settings.limits.spec_bytes)
        for twin in settings.twins:
            spec = load_spec(twin.spec, spec_root=twin.spec_root, limits=spec_limits)
            print(f"== twin {twin.name!r} ({twin.spec.name})")
            try:
                print(describe_spec(spec, twin.resources, twin.operations))
            except ValueError as exc:
                raise ConfigError(f"twin {twin.name!r}: {exc}") from None
        return 0
    if args.spec is None:
        raise ApitwinError("name a SPEC file to check, or --config apitwin.yaml")
    spec = load_spec(args.spec, spec_root=args.spec_root)
    print(describe_spec(spec))
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from apitwin.mcp_tools import build_server
    from apitwin.remote import RemoteControl

    token = args.admin_token or os.environ.get(TOKEN_ENV)
    server = build_server(RemoteControl(args.server, token))
    asyncio.run(server.run_stdio_async())
    return 0


def cmd_schema() -> int:
    from apitwin.config import schema_text

    sys.stdout.write(schema_text())
    return 0


def cmd_serve(settings: Settings, *, log_format: str = "text", log_level: str = "info") -> int:
    import logging

    import uvicorn

    from apitwin.logs import LoadProgress, setup_logging
    from apitwin.server.app import create_app
    from apitwin.server.banner import banner, banner_fields
    from apitwin.server.transport import uvicorn_http_options

    server_level = setup_logging(log_format, log_level)
    loading = LoadProgress(tty=False if log_format == "json" else None)
    app = create_app(settings, progress=loading)

    class Server(uvicorn.Server):
        """Prints the banner once the socket really listens and the twins have started."""

        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            if log_format == "json":
                fields = {"ready_s": round(loading.elapsed, 3), **banner_fields(app, settings)}
                logging.getLogger("apitwin").info("ready", extra={"fields": fields})
            else:
                print(loading.summary(), file=sys.stderr)
                print(banner(app, settings), file=sys.stderr, flush=True)

    # Our handler formats uvicorn's records too (log_config=None); its access log would repeat
    # the request log, and would show query strings, which may hold credentials.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=server_level,
        log_config=None,
        access_log=False,
        lifespan="on",
        **uvicorn_http_options(settings.limits.request_header_bytes),
    )
    Server(config).run()
    return 0


# -- listen and init ------------------------------------------------------------------------------

SECRET_ENV = "APITWIN_WEBHOOK_SECRET"
_SCHEMES = (
    "standard-webhooks",
    "standard",
    "standard-webhooks-v1a",
    "stripe",
    "github",
    "slack",
    "shopify",
)


def _http_status(text: str) -> int:
    if not text.isdigit() or not 200 <= int(text) <= 599:
        raise argparse.ArgumentTypeError(f"{text!r} is not an HTTP status from 200 to 599")
    return int(text)


def _listen_command(sub: Any) -> None:
    listen = sub.add_parser(
        "listen", help="receive webhooks locally: verify, answer and print each delivery"
    )
    listen.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    listen.add_argument(
        "--port", type=int, default=9000, help="port to bind (default 9000; 0 picks a free one)"
    )
    listen.add_argument("--path", default="/webhooks", help="path to register (default /webhooks)")
    listen.add_argument(
        "--scheme",
        choices=_SCHEMES,
        metavar="SCHEME",
        help=f"signing scheme: {', '.join(_SCHEMES)} "
        "(default: the twin's with --server, else standard-webhooks)",
    )
    listen.add_argument("--secret", help=f"signing secret to verify with (env {SECRET_ENV})")
    listen.add_argument(
        "--server",
        metavar="URL",
        help="apitwin server: register as a webhook endpoint of --connection there, "
        "get its secret, remove it on exit",
    )
    listen.add_argument(
        "--connection", metavar="ID", help="connection handle, e.g. research:acme-qa"
    )
    listen.add_argument("--admin-token", help="the server's admin token (env APITWIN_ADMIN_TOKEN)")
    listen.add_argument(
        "--status",
        type=_http_status,
        default=200,
        help="status to answer verified deliveries (200)",
    )
    listen.add_argument(
        "--reject-status",
        type=_http_status,
        default=400,
        help="status to answer deliveries that fail verification (400)",
    )
    listen.add_argument(
        "--forward", metavar="URL", help="pass each delivery on to URL and answer its status"
    )
    listen.add_argument(
        "--tolerance", type=int, default=300, help="accepted timestamp skew in seconds (300)"
    )
    listen.add_argument("--json", action="store_true", help="one JSON object per delivery")
    listen.add_argument("--body", action="store_true", help="also print each payload")


def cmd_listen(args: argparse.Namespace) -> int:
    from apitwin.listen import Options, run

    secret = args.secret or (None if args.server else os.environ.get(SECRET_ENV))
    options = Options(
        secret=secret,
        status=args.status,
        reject_status=args.reject_status,
        forward=args.forward,
        tolerance=args.tolerance,
        json=args.json,
        show_body=args.body,
    )
    return run(
        host=args.host,
        port=args.port,
        path=args.path,
        options=options,
        scheme=args.scheme,
        server=args.server,
        connection_id=args.connection,
        token=args.admin_token or os.environ.get(TOKEN_ENV),
    )


def _init_command(sub: Any) -> None:
    init = sub.add_parser("init", help="write a starter apitwin.yaml showing what was inferred")
    init.add_argument("spec", type=Path, help="OpenAPI 3.x or Swagger 2.0 file (JSON or YAML)")
    init.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("apitwin.yaml"),
        help="file to write (default apitwin.yaml)",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    _spec_root_option(init)


def cmd_init(args: argparse.Namespace) -> int:
    from apitwin.scaffold import write_config

    written = write_config(args.spec, args.output, force=args.force, spec_root=args.spec_root)
    print(written.summary)
    return 0
