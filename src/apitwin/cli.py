"""The `apitwin` command line. Errors become a message on stderr and an exit status, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from apitwin import __version__
from apitwin.errors import ApitwinError, SpecError
from apitwin.spec.loader import load_spec
from apitwin.spec.model import Spec

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apitwin",
        description="Serve a working twin of a partner platform from its OpenAPI spec.",
    )
    parser.add_argument("--version", action="version", version=f"apitwin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="show what a twin of SPEC will serve, and its warnings")
    check.add_argument("spec", type=Path, help="OpenAPI 3.x or Swagger 2.0 file (JSON or YAML)")
    _spec_root_option(check)

    serve = sub.add_parser("serve", help="serve a twin of SPEC over HTTP")
    serve.add_argument("spec", type=Path, help="OpenAPI 3.x or Swagger 2.0 file (JSON or YAML)")
    _server_options(serve)
    serve.add_argument(
        "--base-path", help="serve under this path instead of the spec's first server URL"
    )
    _spec_root_option(serve)

    demo = sub.add_parser("demo", help="serve the bundled example twin")
    _server_options(demo)
    return parser


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated data (default 0)")


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
        if args.command == "serve":
            return cmd_serve(args, load_spec(args.spec, spec_root=args.spec_root))
        if args.command == "demo":
            args.base_path = None
            return cmd_serve(args, load_spec(example_spec()))
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


def cmd_check(args: argparse.Namespace) -> int:
    from apitwin.report import describe_spec

    spec = load_spec(args.spec, spec_root=args.spec_root)
    print(describe_spec(spec))
    return 0


def cmd_serve(args: argparse.Namespace, spec: Spec) -> int:
    import uvicorn

    from apitwin.server.app import create_app
    from apitwin.service.twin import TwinService

    twin = TwinService(spec, seed=args.seed, base_path=args.base_path)
    app = create_app([twin])
    base = f"http://{_display_host(args.host)}:{args.port}{twin.base_path}"
    print(f"apitwin {__version__}: twin of {spec.title} {spec.version}".rstrip(), file=sys.stderr)
    print(f"  {len(spec.operations)} operations served at {base}", file=sys.stderr)
    first = next((op for op in spec.operations if op.method == "get"), None)
    if first is not None:
        print(f"  try: curl {base}{first.path}", file=sys.stderr)
    print("  press Ctrl+C to stop", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
