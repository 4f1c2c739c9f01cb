"""Command line: `pygw serve | check | routes`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import orjson


def _serve(args: argparse.Namespace) -> int:
    if args.openapi is not None:
        return _serve_openapi(args)
    from pygw.supervisor import serve

    return serve(Path(args.config), args.listen, args.workers)


def _serve_openapi(args: argparse.Namespace) -> int:
    import uvloop

    from pygw.config.load import LoadedConfig
    from pygw.config.openapi import load_openapi_config, parse_handlers, parse_upstreams
    from pygw.server import run_gateway

    if args.workers is not None and args.workers > 1:
        print(
            "pygw serve: --openapi runs one process; for workers, write a config with "
            "`pygw import-openapi SPEC -o CONFIG` and serve it with -c CONFIG --workers N",
            file=sys.stderr,
        )
        return 2
    try:
        upstreams = parse_upstreams(args.upstream)
        handlers = parse_handlers(args.handler)
    except ValueError as bad:
        print(f"pygw serve: {bad}", file=sys.stderr)
        return 2
    spec = Path(args.openapi)

    def load() -> LoadedConfig:
        return load_openapi_config(
            spec,
            args.stage,
            upstreams,
            style=args.style,
            admin_listen=args.admin_listen,
            handlers=handlers,
        )

    code: int = uvloop.run(run_gateway(spec, args.listen, loader=load))
    return code


def _import_openapi(args: argparse.Namespace) -> int:
    from pygw.config.load import ConfigError
    from pygw.config.openapi import import_openapi, parse_handlers, parse_upstreams

    try:
        result = import_openapi(
            Path(args.spec),
            stage=args.stage,
            upstreams=parse_upstreams(args.upstream),
            style=args.style,
            handlers=parse_handlers(args.handler),
        )
    except ConfigError as failure:
        print(str(failure), file=sys.stderr)
        return 1
    except ValueError as bad:
        print(f"pygw import-openapi: {bad}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    text = result.to_yaml()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    # Unsupported elements are warnings; only an API that could not work at all fails.
    return 1 if result.errors else 0


def _openapi_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stage",
        metavar="NAME",
        help="OpenAPI import: the stage the API serves on (default $default, at the root)",
    )
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="HOST=URL",
        help="OpenAPI import: send integrations for HOST (a host name, a URL prefix, a "
        "placeholder such as ${uri}, or stageVariables.NAME) to URL; repeatable",
    )
    parser.add_argument(
        "--handler",
        action="append",
        default=[],
        metavar="ARN_OR_NAME=MODULE:FUNCTION",
        help="OpenAPI import: run aws_proxy integrations and Lambda authorizers whose uri is "
        "ARN_OR_NAME (the full uri, or the Lambda function name inside it) with the local "
        "Python callable MODULE:FUNCTION; repeatable",
    )
    parser.add_argument(
        "--style",
        choices=["rest", "http"],
        default="rest",
        help="OpenAPI import: the API's pipeline style (default rest)",
    )


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
    for warning in runtime.warnings:
        print(f"warning: {warning}", file=sys.stderr)
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


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a worker count (1 to 1024)")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pygw",
        description="pygw: a self-hosted API gateway with AWS API Gateway semantics.",
        epilog="Configuration reference: docs/configuration.md. Each command has its own --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Serve the APIs of a configuration. Prints 'pygw listening on ...' when ready; "
        "SIGTERM drains requests in flight and exits 0; SIGHUP (or admin POST /reload) reloads "
        "the configuration, keeping the old one if the new one is invalid.",
    )
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", metavar="CONFIG", help="configuration file (YAML)")
    source.add_argument(
        "--openapi",
        metavar="SPEC",
        help="serve an OpenAPI 3 / Swagger 2.0 definition with x-amazon-apigateway-* "
        "extensions, imported as `pygw import-openapi` would",
    )
    _openapi_arguments(serve)
    serve.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="with --openapi: the admin listener's address (default 127.0.0.1:9901)",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where to accept traffic (HOST:PORT, or unix:/path); overrides server.listen; "
        "port 0 picks a free port",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="worker processes sharing the port (SO_REUSEPORT) under a supervisor that restarts "
        "them; overrides server.workers (default 1: one process, no supervisor)",
    )
    serve.set_defaults(run=_serve)

    importer = commands.add_parser(
        "import-openapi",
        help="convert an OpenAPI definition into a pygw configuration",
        description="Convert an OpenAPI 3 or Swagger 2.0 definition with x-amazon-apigateway-* "
        "extensions into a pygw configuration. What pygw does differently is listed as "
        "warnings (on stderr, and as comments at the top of the output), each naming the JSON "
        "pointer of its construct.",
    )
    importer.add_argument("spec", metavar="SPEC", help="the definition (JSON or YAML)")
    importer.add_argument("-o", "--output", metavar="CONFIG", help="write here, not to stdout")
    _openapi_arguments(importer)
    importer.set_defaults(run=_import_openapi)

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

    # Listed here for --help; its options belong to the harness (`pygw bench --help`).
    commands.add_parser(
        "bench",
        help="run the benchmark harness (from a source checkout; see bench/README.md)",
        add_help=False,
    )
    return parser


def _bench(argv: list[str]) -> int:
    try:
        from bench.harness import main as harness_main
    except ImportError:
        print(
            "pygw bench: the harness lives in the source tree's bench/ folder; run it from a "
            "checkout (make bench)",
            file=sys.stderr,
        )
        return 2
    return harness_main(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["bench"]:
        return _bench(arguments[1:])
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code
