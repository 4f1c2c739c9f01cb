"""Command line: `pygw serve | check | routes`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import orjson

if TYPE_CHECKING:
    from pygw.config.load import LoadedConfig
    from pygw.config.sam import SamOptions


def _serve(args: argparse.Namespace) -> int:
    if args.openapi is not None:
        return _serve_openapi(args)
    if args.sam is not None:
        return _serve_sam(args)
    from pygw.supervisor import serve

    return serve(Path(args.config), args.listen, args.workers, args.keep_faults, watch=args.watch)


def _serve_openapi(args: argparse.Namespace) -> int:
    import uvloop

    from pygw.config.openapi import (
        load_openapi_config,
        parse_handlers,
        parse_jwks,
        parse_upstreams,
        parse_user_pools,
    )
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
        jwks = parse_jwks(args.jwks)
        user_pools = parse_user_pools(args.user_pool)
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
            jwks=jwks,
            user_pools=user_pools,
        )

    watch = [spec.resolve().parent] if args.watch else []
    code: int = uvloop.run(
        run_gateway(spec, args.listen, loader=load, watch=watch, keep_faults=args.keep_faults)
    )
    return code


def _sam_options(args: argparse.Namespace, relative_to: Path | None = None) -> SamOptions:
    from pygw.config.sam import SamOptions, parse_assignments, read_env_vars

    endpoints = parse_assignments(args.function_endpoint, "--function-endpoint")
    for name, url in endpoints.items():
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"--function-endpoint {name}={url}: write FUNCTION_ID=http://HOST:PORT"
            )
    if args.lambda_endpoint is not None and not args.lambda_endpoint.startswith(
        ("http://", "https://")
    ):
        raise ValueError(f"--lambda-endpoint {args.lambda_endpoint!r}: write http://HOST:PORT")
    return SamOptions(
        parameter_overrides=parse_assignments(args.parameter_overrides, "--parameter-overrides"),
        env_vars=read_env_vars(Path(args.env_vars)) if args.env_vars else {},
        lambda_endpoint=args.lambda_endpoint,
        function_endpoints=endpoints,
        relative_to=relative_to,
    )


def _announce_out_of_process(loaded: LoadedConfig) -> None:
    seen: set[tuple[str, str]] = set()
    for api in loaded.config.apis:
        for route in api.routes.values():
            spec = route.integration
            if spec.type == "lambda" and (spec.function_name, spec.endpoint) not in seen:
                seen.add((spec.function_name, spec.endpoint))
                print(
                    f"pygw: function {spec.function_name} runs out of process, invoked at "
                    f"{spec.endpoint}",
                    file=sys.stderr,
                    flush=True,
                )


def _serve_sam(args: argparse.Namespace) -> int:
    import uvloop

    from pygw.config.load import ConfigError
    from pygw.config.sam import load_sam_config
    from pygw.server import run_gateway

    if args.workers is not None and args.workers > 1:
        print(
            "pygw serve: --sam runs one process; for workers, write a config with "
            "`pygw import-sam TEMPLATE -o CONFIG` and serve it with -c CONFIG --workers N",
            file=sys.stderr,
        )
        return 2
    try:
        options = _sam_options(args)
    except ValueError as bad:
        print(f"pygw serve: {bad}", file=sys.stderr)
        return 2
    template = Path(args.sam)
    try:
        initial = load_sam_config(template, options, admin_listen=args.admin_listen)
    except ConfigError as failure:
        print(str(failure), file=sys.stderr)
        return 1
    _announce_out_of_process(initial)
    # The gateway's first load is the import just made (its warnings said once); reloads import
    # the template again.
    pending = [initial]

    def load() -> LoadedConfig:
        if pending:
            return pending.pop()
        return load_sam_config(template, options, admin_listen=args.admin_listen)

    # The project's folder: the template, CodeUri folders and DefinitionUri files below it.
    watch = [template.resolve().parent] if args.watch else []
    code: int = uvloop.run(run_gateway(template, args.listen, loader=load, watch=watch))
    return code


def _import_sam(args: argparse.Namespace) -> int:
    from pygw.config.load import ConfigError
    from pygw.config.sam import import_sam

    output = Path(args.output) if args.output else None
    try:
        options = _sam_options(args, output.parent if output else None)
        result = import_sam(Path(args.template), options)
    except ConfigError as failure:
        print(str(failure), file=sys.stderr)
        return 1
    except ValueError as bad:
        print(f"pygw import-sam: {bad}", file=sys.stderr)
        return 2
    return _write_import(result, output)


class _Imported(Protocol):
    """What `import-openapi` and `import-sam` produce."""

    @property
    def warnings(self) -> list[str]: ...

    @property
    def errors(self) -> list[str]: ...

    def to_yaml(self) -> str: ...


def _write_import(result: _Imported, output: Path | None) -> int:
    """An import's warnings and errors on stderr, its configuration to `output` or stdout.
    Unsupported elements are warnings; only an API that could not work at all fails (1)."""
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    text = result.to_yaml()
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 1 if result.errors else 0


def _sam_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parameter-overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="SAM: template parameter values, as sam takes them (KEY=VALUE, space-separated "
        "or repeated)",
    )
    parser.add_argument(
        "--env-vars",
        metavar="FILE.json",
        help='SAM: environment overrides, as sam local takes them: {"FunctionId": {"NAME": '
        '"value"}, "Parameters": {"NAME": "value"}}',
    )
    parser.add_argument(
        "--lambda-endpoint",
        metavar="URL",
        help="SAM: the Lambda Invoke API (e.g. the Runtime Interface Emulator) that functions "
        "not written in Python are invoked at",
    )
    parser.add_argument(
        "--function-endpoint",
        action="append",
        default=[],
        metavar="FUNCTION_ID=URL",
        help="SAM: the Invoke API of one function (by logical id); repeatable",
    )


def _import_openapi(args: argparse.Namespace) -> int:
    from pygw.config.load import ConfigError
    from pygw.config.openapi import (
        import_openapi,
        parse_handlers,
        parse_jwks,
        parse_upstreams,
        parse_user_pools,
    )

    try:
        result = import_openapi(
            Path(args.spec),
            stage=args.stage,
            upstreams=parse_upstreams(args.upstream),
            style=args.style,
            handlers=parse_handlers(args.handler),
            jwks=parse_jwks(args.jwks),
            user_pools=parse_user_pools(args.user_pool),
        )
    except ConfigError as failure:
        print(str(failure), file=sys.stderr)
        return 1
    except ValueError as bad:
        print(f"pygw import-openapi: {bad}", file=sys.stderr)
        return 2
    return _write_import(result, Path(args.output) if args.output else None)


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
        "--jwks",
        action="append",
        default=[],
        metavar="NAME=PATH_OR_URL",
        help="OpenAPI import: verify tokens of the Cognito authorizer NAME (its security scheme's "
        "name, an entry of its providerARNs, or * for all) with this JWKS file or URL instead "
        "of the pool's own; repeatable",
    )
    parser.add_argument(
        "--user-pool",
        action="append",
        default=[],
        metavar="NAME=ARN",
        help="OpenAPI import: the user pool ARN of the Cognito authorizer NAME (as for --jwks), "
        "e.g. for a providerARNs placeholder such as ${cognito_pool_arn}; repeatable",
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
    source.add_argument(
        "--sam",
        metavar="TEMPLATE",
        help="serve an AWS SAM template (YAML or JSON), imported as `pygw import-sam` would",
    )
    _openapi_arguments(serve)
    _sam_arguments(serve)
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
        "--watch",
        action="store_true",
        help="reload when files change: the config's (or template's, or definition's) folder "
        "and python_path folders; handler modules whose source changed are imported afresh "
        "(one process only)",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="worker processes sharing the port (SO_REUSEPORT) under a supervisor that restarts "
        "them; overrides server.workers (default 1: one process, no supervisor)",
    )
    serve.add_argument(
        "--keep-faults",
        action="store_true",
        help="keep the faults set through the admin API (PUT /faults/...) across reloads; "
        "without it a reload returns every route to the faults its config gives it",
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

    sam = commands.add_parser(
        "import-sam",
        help="convert an AWS SAM template into a pygw configuration",
        description="Convert an AWS SAM template (CloudFormation YAML with short-form tags, or "
        "JSON) into a pygw configuration: Api and HttpApi events of its functions, its APIs' "
        "stages, CORS, authorizers, API keys, throttling and caching. What pygw does differently "
        "is listed as warnings, each naming its path in the template. Exit 1 only when nothing "
        "can be served.",
    )
    sam.add_argument("template", metavar="TEMPLATE", help="the SAM template")
    sam.add_argument("-o", "--output", metavar="CONFIG", help="write here, not to stdout")
    _sam_arguments(sam)
    sam.set_defaults(run=_import_sam)

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
        help="bench your own config (-c CONFIG, see docs/bench.md), or run the benchmark "
        "harness (from a source checkout; see bench/README.md)",
        add_help=False,
    )
    return parser


def _bench(argv: list[str]) -> int:
    if any(a in ("-c", "--config") or a.startswith("--config=") for a in argv):
        # A user's own config: packaged, so it runs from an installed wheel.
        from pygw.bench_config import main as bench_config

        return bench_config(argv)
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
