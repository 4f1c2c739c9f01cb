"""Command line: `pygw serve | check | routes`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import orjson


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from pygw.server import run_gateway

    code: int = uvloop.run(run_gateway(Path(args.config), args.listen))
    return code


def _check(args: argparse.Namespace) -> int:
    from pygw.config.load import ConfigError, load_config
    from pygw.observe.metrics import Metrics
    from pygw.runtime import compile_runtime

    try:
        loaded = load_config(Path(args.config))
        runtime = compile_runtime(loaded, Metrics())
    except ConfigError as failure:
        print(str(failure), file=sys.stderr)
        return 1
    print(f"{args.config}: ok: {runtime.summary()}")
    return 0


def _routes(args: argparse.Namespace) -> int:
    from pygw.config.load import ConfigError, load_config
    from pygw.observe.metrics import Metrics
    from pygw.runtime import compile_runtime

    try:
        runtime = compile_runtime(load_config(Path(args.config)), Metrics())
    except ConfigError as failure:
        print(str(failure), file=sys.stderr)
        return 1
    table = runtime.route_table()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(table, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    for row in table:
        host = row["host"] or "*"
        print(
            f"{host:<24} {row['path_prefix'] or '/':<16} {row['route']:<32} "
            f"{row['api']}/{row['stage']} ({row['style']}) -> {row['integration']}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pygw",
        description="pygw: a self-hosted API gateway with AWS API Gateway semantics.",
        epilog="Configuration reference: README.md. Each command has its own --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Serve the APIs of a configuration. Prints 'pygw listening on ...' when ready; "
        "SIGTERM drains requests in flight and exits 0; SIGHUP (or admin POST /reload) reloads "
        "the configuration, keeping the old one if the new one is invalid.",
    )
    serve.add_argument(
        "-c", "--config", required=True, metavar="CONFIG", help="configuration file (YAML)"
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where to accept traffic (HOST:PORT, or unix:/path); overrides server.listen; "
        "port 0 picks a free port",
    )
    serve.set_defaults(run=_serve)

    check = commands.add_parser(
        "check",
        help="validate and compile a configuration",
        description="Validate and compile a configuration without serving it. Exit 0 with a "
        "one-line summary, or exit 1 with each error as FILE: path.to.field: problem (fix).",
    )
    check.add_argument(
        "-c", "--config", required=True, metavar="CONFIG", help="configuration file (YAML)"
    )
    check.set_defaults(run=_check)

    routes = commands.add_parser(
        "routes",
        help="print the compiled route table",
        description="Print every route in match-precedence order: host, mount (base path and "
        "stage), route key, API, stage, style and integration. Implicit routes are the answers "
        "an API gives for paths none of its routes match.",
    )
    routes.add_argument(
        "-c", "--config", required=True, metavar="CONFIG", help="configuration file (YAML)"
    )
    routes.add_argument("--json", action="store_true", help="machine-readable output")
    routes.set_defaults(run=_routes)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code
