"""The configuration layer: model defaults and checks, YAML, env interpolation, error shape."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from pygw.config import (
    CognitoAuthorizerConfig,
    ConfigError,
    ConfigIssue,
    CustomAuthorizerConfig,
    FunctionIntegration,
    GatewayConfig,
    HttpProxyIntegration,
    JwtAuthorizerConfig,
    LoadedConfig,
    MockIntegration,
    RouteKeyError,
    format_issues,
    load_config,
    parse_config,
    parse_listen,
    parse_route_key,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILE = "cfg.yaml"


def parse(text: str, env: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(textwrap.dedent(text), FILE, env=env or {})


def errors(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    lines = str(info.value).splitlines()
    assert lines == [str(issue) for issue in info.value.errors]
    return lines


def one_error(text: str, env: dict[str, str] | None = None) -> str:
    found = errors(text, env)
    assert len(found) == 1, found
    return found[0]


def api(body: str, style: str = "http", name: str = "a") -> str:
    """A config with one API; ``body`` is the API's keys, indented by the caller's 4 spaces."""
    return f"apis:\n  - name: {name}\n    type: {style}\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )


def route(integration: str = "{type: mock}", extra: str = "", key: str = "GET /x") -> str:
    lines = f'routes:\n  "{key}":\n    integration: {integration}\n'
    for line in textwrap.dedent(extra).splitlines():
        if line.strip():
            lines += f"    {line}\n"
    return lines


# --------------------------------------------------------------------------------------------------
# Examples and defaults


@pytest.mark.parametrize("name", ["quickstart.yaml", "full.yaml"])
def test_examples_load(name: str) -> None:
    loaded = load_config(EXAMPLES / name, env={})
    assert isinstance(loaded, LoadedConfig)
    assert loaded.path == (EXAMPLES / name).resolve()
    assert loaded.folder == EXAMPLES.resolve()
    assert loaded.config.apis
    assert loaded.summary().endswith("routes")


def test_quickstart_shape() -> None:
    cfg = load_config(EXAMPLES / "quickstart.yaml", env={}).config
    assert cfg.server.listen == "127.0.0.1:8080"
    assert cfg.admin.listen == "127.0.0.1:9901"
    assert cfg.admin.token == ""
    http, rest = cfg.apis
    assert (http.type, [s.name for s in http.stages], http.base_path) == (
        "http",
        ["$default"],
        None,
    )
    assert (rest.type, [s.name for s in rest.stages], rest.base_path) == ("rest", ["v1"], "/shop")
    assert set(http.routes) == {
        "GET /hello",
        "GET /items/{id}",
        "GET /upstream/{proxy+}",
        "$default",
    }
    # Everything is a mock but the proxy to the gateway's own admin listener: no outside service.
    for api_cfg in cfg.apis:
        for key, r in api_cfg.routes.items():
            if key == "GET /upstream/{proxy+}":
                assert isinstance(r.integration, HttpProxyIntegration)
                assert r.integration.uri == f"http://{cfg.admin.listen}/{{proxy}}"
            else:
                assert isinstance(r.integration, MockIntegration)
    hello = http.routes["GET /hello"].integration
    assert isinstance(hello, MockIntegration)
    assert hello.status == 200
    assert hello.encoded_body()[1] == "application/json"
    not_found = http.routes["$default"].integration
    assert isinstance(not_found, MockIntegration)
    assert not_found.status == 404
    assert not_found.encoded_body() == (
        b'{"message":"Nothing here; try /hello"}',
        "application/json",
    )


def test_full_example_uses_env_defaults_and_overrides() -> None:
    cfg = load_config(EXAMPLES / "full.yaml", env={}).config
    assert cfg.apis[0].api_keys[0].value == "alice-example-key-0123456789"
    cfg = load_config(EXAMPLES / "full.yaml", env={"ALICE_KEY": "k" * 24}).config
    assert cfg.apis[0].api_keys[0].value == "k" * 24
    shop = cfg.apis[0]
    assert isinstance(shop.authorizers["users"], JwtAuthorizerConfig)
    assert isinstance(shop.authorizers["legacy"], CustomAuthorizerConfig)
    assert shop.authorizers["legacy"].payload_format == "1.0"
    get_item = shop.routes["GET /items/{id}"].integration
    assert isinstance(get_item, HttpProxyIntegration)
    assert get_item.uri == "${stageVariables.backend}/items/{id}"
    assert shop.routes["POST /items"].validation is not None


def test_defaults() -> None:
    cfg = parse("apis: [{name: a, routes: {'GET /': {integration: {type: mock}}}}]")
    assert cfg.server.listen == "127.0.0.1:8080"
    assert cfg.server.workers == 1
    assert cfg.server.limits.max_body_bytes == 10_485_760
    assert cfg.server.limits.max_header_bytes == 16_384
    assert cfg.server.limits.header_timeout_s == 10
    assert cfg.server.limits.idle_timeout_s == 75
    assert cfg.server.drain_timeout_s == 10
    assert (cfg.admin.listen, cfg.admin.token) == ("127.0.0.1:9901", "")
    assert (cfg.state.backend, cfg.state.on_error) == ("local", "allow")
    assert (cfg.throttle.rate, cfg.throttle.burst) == (10_000, 5_000)
    assert cfg.access_log is not None and cfg.access_log.path == "-"
    a = cfg.apis[0]
    assert a.type == "http"
    assert [s.name for s in a.stages] == ["$default"]
    integration = a.routes["GET /"].integration
    assert isinstance(integration, MockIntegration)
    assert (integration.status, integration.body) == (200, None)


def test_http_proxy_defaults() -> None:
    cfg = parse(api(route("{type: http_proxy, uri: 'http://127.0.0.1:9001/x'}")))
    proxy = cfg.apis[0].routes["GET /x"].integration
    assert isinstance(proxy, HttpProxyIntegration)
    assert proxy.timeout_ms == 29_000
    assert proxy.connect_timeout_ms == 5_000
    assert proxy.max_connections == 100
    assert proxy.retries == 1
    assert proxy.balance == "round_robin"
    assert (proxy.health.failures, proxy.health.cooldown_s) == (5, 10)


def test_access_log_null_disables() -> None:
    assert parse("access_log: null").access_log is None


def test_throttle_burst_defaults_to_one_second_of_rate() -> None:
    assert parse("throttle: {rate: 20.5}").throttle.burst == 21


def test_models_are_frozen() -> None:
    def assign(obj: object, name: str, value: object) -> None:
        setattr(obj, name, value)

    cfg = parse(api(route()))
    with pytest.raises(ValidationError, match="frozen"):
        assign(cfg.server, "workers", 4)
    with pytest.raises(ValidationError, match="frozen"):
        assign(cfg.apis[0], "name", "b")
    with pytest.raises(ValidationError, match="frozen"):
        assign(cfg.apis[0].routes["GET /x"].integration, "status", 500)


# --------------------------------------------------------------------------------------------------
# Error shape


def test_issue_shape() -> None:
    issue = ConfigIssue("f.yaml", "apis[0].name", "bad", "do this")
    assert str(issue) == "f.yaml: apis[0].name: bad (do this)"
    assert str(ConfigIssue("f.yaml", "", "bad", "do this")) == "f.yaml: bad (do this)"
    err = ConfigError([issue, issue])
    assert str(err) == format_issues([issue, issue]) == f"{issue}\n{issue}"
    assert err.errors == [issue, issue]


def test_unknown_key_suggests_closest() -> None:
    assert one_error("server: {limitz: {}}") == (
        f"{FILE}: server.limitz: unknown key 'limitz' (did you mean 'limits'?)"
    )


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    assert one_error("admin: {zzz: 1}") == (
        f"{FILE}: admin.zzz: unknown key 'zzz' (remove it; valid keys here: listen, token)"
    )


def test_unknown_top_level_key() -> None:
    assert one_error("apiss: []") == f"{FILE}: apiss: unknown key 'apiss' (did you mean 'apis'?)"


def test_unknown_key_inside_integration_uses_its_type() -> None:
    line = one_error(api(route("{type: mock, statuss: 201}")))
    assert line == (
        f"{FILE}: apis[0].routes.GET /x.integration.statuss: unknown key 'statuss' "
        "(did you mean 'status'?)"
    )
    line = one_error(api(route("{type: function, handler: 'a:b', timeout: 5}")))
    assert line == (
        f"{FILE}: apis[0].routes.GET /x.integration.timeout: unknown key 'timeout' "
        "(did you mean 'timeout_ms'?)"
    )


def test_unknown_integration_type() -> None:
    assert one_error(api(route("{type: mok}"))) == (
        f"{FILE}: apis[0].routes.GET /x.integration.type: unknown type 'mok' "
        "(did you mean 'mock'? use one of: http_proxy, mock, function, lambda)"
    )


def test_missing_integration_type() -> None:
    assert one_error(api(route("{status: 200}"))) == (
        f"{FILE}: apis[0].routes.GET /x.integration.type: required key is missing "
        "(add type: one of http_proxy, mock, function, lambda)"
    )


def test_missing_required_key() -> None:
    assert one_error("apis: [{routes: {}}]") == (
        f"{FILE}: apis[0].name: required key is missing (add name: ...)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server: {workers: many}",
            "server.workers: expected an integer, got 'many' (write a whole number)",
        ),
        ("throttle: {rate: fast, burst: 1}", "throttle.rate: expected a number, got 'fast'"),
        ("apis: {name: a}", "apis: expected a list, got a mapping (write a list, e.g. [a, b])"),
        ("server: 8080", "server: expected a mapping, got an integer (write key: value pairs)"),
        ("admin: {token: [a]}", "admin.token: expected a string, got a list"),
        (
            "apis: [{name: a, routes: {'GET /': {integration: {type: mock},"
            " api_key_required: maybe}}}]",
            "apis[0].routes.GET /.api_key_required: expected true or false, got 'maybe'",
        ),
        ("server: {workers: 0}", "server.workers: must be at least 1, got 0 (use 1 or more)"),
        (
            "state: {backend: redsi}",
            "state.backend: 'redsi' is not one of: local, shared, redis (did you mean 'redis'?)",
        ),
    ],
)
def test_wrong_types_say_what_is_expected(text: str, expected: str) -> None:
    assert one_error(text).startswith(f"{FILE}: {expected}")


def test_several_errors_reported_together() -> None:
    found = errors(
        """
        server: {listen: nowhere, workers: 0, limitz: {}}
        throttle: {rate: -1, burst: 1}
        apis:
          - name: a
            type: htp
        """
    )
    assert found == [
        f"{FILE}: server.listen: 'nowhere' is not a listen address "
        "(write HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080) or unix:/path/to.sock)",
        f"{FILE}: server.workers: must be at least 1, got 0 (use 1 or more)",
        f"{FILE}: server.limitz: unknown key 'limitz' (did you mean 'limits'?)",
        f"{FILE}: throttle.rate: must be at least 0, got -1 (use 0 or more)",
        f"{FILE}: apis[0].type: 'htp' is not one of: http, rest, websocket (did you mean 'http'?)",
    ]


def test_issues_carry_line_numbers() -> None:
    with pytest.raises(ConfigError) as info:
        parse("server:\n  listen: 127.0.0.1:80\n  workers: 0\n")
    assert info.value.errors[0].line == 3


def test_yaml_syntax_error_names_line_and_column() -> None:
    message = one_error("server:\n  listen: a: b\n")
    # libyaml ("in this context") and PyYAML's pure-Python parser ("here") word it differently.
    assert message.startswith(
        f"{FILE}: YAML syntax error at line 2, column 12: mapping values are not allowed "
    )
    assert message.endswith("(check the indentation, and quote values that contain ': ')")
    assert "line 2, column 1" in one_error("server:\n\tlisten: x\n")


def test_duplicate_yaml_keys_are_errors() -> None:
    text = 'apis:\n  - name: a\n    routes:\n      "GET /x": {integration: {type: mock}}\n'
    text += '      "GET /x": {integration: {type: mock}}\n'
    assert one_error(text) == (
        f"{FILE}: apis[0].routes.GET /x: duplicate key (first defined at line 4) "
        "(remove one of the two; YAML keeps only the last)"
    )


def test_empty_and_non_mapping_documents() -> None:
    assert one_error("") == f"{FILE}: the file is empty (start from examples/quickstart.yaml)"
    assert "must be a mapping" in one_error("- a\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert (
        str(info.value)
        == f"{tmp_path / 'nope.yaml'}: file not found (check the path given with -c)"
    )


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("server: {workers: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: server.workers: ")


# --------------------------------------------------------------------------------------------------
# Environment interpolation


def test_env_interpolation() -> None:
    cfg = parse(
        """
        server: {listen: "${env:HOST}:${env:PORT:-8081}", workers: "${env:WORKERS:-2}"}
        admin: {token: "${env:TOKEN:-}"}
        """,
        env={"HOST": "0.0.0.0"},
    )
    assert cfg.server.listen == "0.0.0.0:8081"
    assert cfg.server.workers == 2
    assert cfg.admin.token == ""


def test_env_set_value_wins_over_default() -> None:
    assert parse('admin: {token: "${env:T:-x}"}', env={"T": "secret"}).admin.token == "secret"


def test_missing_env_var_names_it_and_the_field() -> None:
    assert one_error('admin: {token: "${env:PYGW_TOKEN}"}') == (
        f"{FILE}: admin.token: environment variable PYGW_TOKEN is not set "
        "(set PYGW_TOKEN, or give a default: ${env:PYGW_TOKEN:-VALUE})"
    )


def test_missing_env_var_does_not_add_follow_up_errors() -> None:
    text = api('api_keys: [{id: alice, value: "${env:ALICE_KEY}"}]\n', style="rest")
    assert one_error(text) == (
        f"{FILE}: apis[0].api_keys[0].value: environment variable ALICE_KEY is not set "
        "(set ALICE_KEY, or give a default: ${env:ALICE_KEY:-VALUE})"
    )


def test_missing_env_vars_reported_with_other_errors() -> None:
    found = errors('admin: {token: "${env:A}"}\nserver: {workers: 0, listen: "${env:B}"}\n')
    assert [line.split(": ")[1] for line in found] == [
        "admin.token",
        "server.listen",
        "server.workers",
    ]


def test_stage_variables_are_left_alone_and_env_can_be_escaped() -> None:
    cfg = parse(
        api(
            'stages: [{name: v1, variables: {lit: "$${env:NOT_ME}"}}]\n'
            + route("{type: http_proxy, uri: '${stageVariables.backend}/x'}")
        )
    )
    a = cfg.apis[0]
    assert a.stages[0].variables == {"lit": "${env:NOT_ME}"}
    proxy = a.routes["GET /x"].integration
    assert isinstance(proxy, HttpProxyIntegration)
    assert proxy.uri == "${stageVariables.backend}/x"


def test_malformed_env_reference() -> None:
    assert "is not a valid environment reference" in one_error('admin: {token: "${env:a-b}"}')
    assert "unterminated" in one_error('admin: {token: "${env:A"}')


# --------------------------------------------------------------------------------------------------
# Style-specific keys


@pytest.mark.parametrize(
    ("style", "body", "path", "key", "only"),
    [
        ("http", "api_keys: [{id: a, value: k}]\n", "apis[0].api_keys", "api_keys", "REST-style"),
        ("http", "usage_plans: [{name: p}]\n", "apis[0].usage_plans", "usage_plans", "REST-style"),
        ("http", "cache: {ttl_s: 60}\n", "apis[0].cache", "cache", "REST-style"),
        ("websocket", "cache: {ttl_s: 60}\n", "apis[0].cache", "cache", "REST-style"),
        (
            "http",
            route(extra="cache: {ttl_s: 5}"),
            "apis[0].routes.GET /x.cache",
            "cache",
            "REST-style",
        ),
        (
            "http",
            route(extra="validate: {params: [header.x]}"),
            "apis[0].routes.GET /x.validate",
            "validate",
            "REST-style",
        ),
        (
            "http",
            route(extra="templates: {request: {}}"),
            "apis[0].routes.GET /x.templates",
            "templates",
            "REST-style",
        ),
        (
            "http",
            route(extra="api_key_required: true"),
            "apis[0].routes.GET /x.api_key_required",
            "api_key_required",
            "REST-style",
        ),
        (
            "rest",
            route(extra="mapping: {request: {}}"),
            "apis[0].routes.GET /x.mapping",
            "mapping",
            "HTTP-style",
        ),
        (
            "http",
            "route_selection: $request.body.op\n",
            "apis[0].route_selection",
            "route_selection",
            "WebSocket",
        ),
        (
            "rest",
            route(extra="route_response: true"),
            "apis[0].routes.GET /x.route_response",
            "route_response",
            "WebSocket",
        ),
    ],
)
def test_style_specific_keys_are_refused(
    style: str, body: str, path: str, key: str, only: str
) -> None:
    names = {"http": "HTTP-style", "rest": "REST-style", "websocket": "WebSocket"}
    allowed = {"REST-style": "rest", "HTTP-style": "http", "WebSocket": "websocket"}[only]
    assert one_error(api(body, style=style)) == (
        f"{FILE}: {path}: {key} is {only} only; this API is {names[style]} (type: {style}) "
        f"(remove {key}, or move it to an API of type {allowed})"
    )


def test_style_specific_keys_accepted_in_their_style() -> None:
    parse(
        api(
            "api_keys: [{id: a, value: k}]\n"
            "usage_plans: [{name: p, keys: [a]}]\n"
            "cache: {ttl_s: 60}\n"
            "models: {M: {type: object}}\n"
            + route(
                extra="""
                cache: {ttl_s: 5}
                validate: {params: [header.x], body: M}
                templates: {request: {application/json: "$input.body"}}
                api_key_required: true
                """
            ),
            style="rest",
        )
    )
    parse(api(route(extra='mapping: {request: {"overwrite:header.x": "$context.stage"}}')))
    parse(
        api(
            "route_selection: $request.body.op\n"
            + route(extra="route_response: true", key="sendmessage"),
            style="websocket",
        )
    )


# --------------------------------------------------------------------------------------------------
# Route keys


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "get /x",
            "unknown method 'get' in route key 'get /x' (methods are upper case: write 'GET /x')",
        ),
        ("FETCH /x", "unknown method 'FETCH' in route key 'FETCH /x' (did you mean 'PATCH'?"),
        ("GET x", "the path of route key 'GET x' does not start with '/' (write 'GET /x')"),
        ("GET/x", "route key 'GET/x' has no method (write 'GET /x')"),
        ("GET /x/", "the path of route key 'GET /x/' ends with '/' (write 'GET /x'"),
        ("GET /a//b", "the path of route key 'GET /a//b' has an empty segment ('//')"),
        (
            "GET /{p+}/b",
            "greedy parameter '{p+}' of route key 'GET /{p+}/b' is not the last segment",
        ),
        ("GET /a{b}", "segment 'a{b}' of route key 'GET /a{b}' mixes text and a parameter"),
        ("GET /x/{id", "segment '{id' of route key 'GET /x/{id' mixes text and a parameter"),
        ("GET /{1a}", "'{1a}' in route key 'GET /{1a}' is not a valid parameter"),
        ("GET /{a}/{a}", "parameter 'a' appears twice in route key 'GET /{a}/{a}'"),
        ("GET  /x", "route key 'GET  /x' has extra spaces"),
        ("GET /a b", "route key 'GET /a b' has extra spaces"),
        ("$defualt", "'$defualt' is not a route key (did you mean '$default'?"),
        ("$connect", "'$connect' is not a route key of a HTTP API"),
        ("items", "'items' is not a route key (write METHOD /path"),
    ],
)
def test_route_key_syntax_errors(key: str, message: str) -> None:
    line = one_error(api(route(key=key)))
    assert line.startswith(f"{FILE}: apis[0].routes.{key}: {message}"), line


@pytest.mark.parametrize("key", ["GET /", "ANY /{proxy+}", "$default", "DELETE /a/{b}/c/{d+}"])
def test_valid_route_keys(key: str) -> None:
    parse(api(route(key=key)))


def test_websocket_route_keys() -> None:
    parse(api(route(key="$connect") + route(key="$disconnect")[len("routes:\n") :], "websocket"))
    assert "is not a WebSocket route key" in one_error(api(route(key="GET /x"), "websocket"))


def test_parse_route_key() -> None:
    key = parse_route_key("GET /items/{id}/files/{path+}")
    assert (key.method, key.path, key.params, key.greedy) == (
        "GET",
        "/items/{id}/files/{path+}",
        ("id", "path"),
        True,
    )
    assert key.segments == ("items", "{id}", "files", "{path+}")
    assert key.shape == "GET /items/{}/files/{+}"
    assert parse_route_key("$default").is_default
    with pytest.raises(RouteKeyError):
        parse_route_key("GET /a/")


def test_routes_that_cannot_be_told_apart() -> None:
    text = api(
        'routes:\n  "GET /a/{id}": {integration: {type: mock}}\n'
        '  "GET /a/{name}": {integration: {type: mock}}\n'
        '  "ANY /a/{name}": {integration: {type: mock}}\n'
    )
    assert one_error(text) == (
        f"{FILE}: apis[0].routes.GET /a/{{name}}: route 'GET /a/{{name}}' can never be told apart "
        "from route 'GET /a/{id}' (remove one of them, or make their paths differ by more than "
        "parameter names)"
    )


# --------------------------------------------------------------------------------------------------
# References between sections


def test_unknown_authorizer() -> None:
    text = api(
        "authorizers: {users: {type: jwt, issuer: 'https://idp', audience: [a]}}\n"
        + route(extra="authorizer: user")
    )
    assert one_error(text) == (
        f"{FILE}: apis[0].routes.GET /x.authorizer: unknown authorizer 'user' "
        "(did you mean 'users'? (defined under authorizers: users))"
    )
    assert one_error(api(route(extra="authorizer: users"))) == (
        f"{FILE}: apis[0].routes.GET /x.authorizer: unknown authorizer 'users' "
        "(define 'users' under authorizers, or remove the reference)"
    )


def test_unknown_usage_plan_key() -> None:
    text = api(
        "api_keys: [{id: alice, value: k1}]\nusage_plans: [{name: gold, keys: [alice, bob]}]\n",
        style="rest",
    )
    assert one_error(text) == (
        f"{FILE}: apis[0].usage_plans[0].keys[1]: usage plan 'gold' names unknown API key 'bob' "
        "(use one of the names under api_keys: alice)"
    )


def test_unknown_validate_body_model() -> None:
    text = api("models: {Item: {type: object}}\n" + route(extra="validate: {body: Itme}"), "rest")
    assert one_error(text) == (
        f"{FILE}: apis[0].routes.GET /x.validate.body: unknown model 'Itme' "
        "(did you mean 'Item'? (defined under models: Item))"
    )


def test_scopes_need_a_jwt_authorizer() -> None:
    assert "scopes need a jwt or cognito_user_pools authorizer" in one_error(
        api(route(extra="scopes: [a]"))
    )


def test_cross_checks_report_several_problems() -> None:
    text = api(
        "api_keys: [{id: k, value: v}, {id: k, value: w}]\n"
        + route(extra="authorizer: nobody\nvalidate: {body: Nothing}"),
        "rest",
    )
    assert [line.split(": ")[1] for line in errors(text)] == [
        "apis[0].api_keys[1].id",
        "apis[0].routes.GET /x.authorizer",
        "apis[0].routes.GET /x.validate.body",
    ]


def test_duplicate_api_names_and_mounts() -> None:
    text = "apis:\n  - {name: a}\n  - {name: a}\n"
    found = errors(text)
    assert (
        found[0] == f"{FILE}: apis[1].name: API name 'a' is used twice (give each API its own name)"
    )
    mount = one_error("apis:\n  - {name: a}\n  - {name: b, base_path: /x}\n  - {name: c}\n")
    assert mount.startswith(f"{FILE}: apis[2]: APIs 'a' and 'c' both serve stage '$default'")


# --------------------------------------------------------------------------------------------------
# Integrations


def test_http_proxy_uri_or_targets() -> None:
    both = api(route("{type: http_proxy, uri: 'http://a/x', targets: [{url: 'http://b'}]}"))
    assert "uri has a scheme and host, but targets are given too" in one_error(both)
    neither = api(route("{type: http_proxy}"))
    assert "needs uri or targets" in one_error(neither)
    bare = api(route("{type: http_proxy, uri: /x}"))
    assert "has no scheme and host" in one_error(bare)
    cfg = parse(
        api(
            route(
                "{type: http_proxy, uri: '/items/{id}', balance: weighted,"
                " targets: [{url: 'http://a:1/', weight: 3}, {url: 'http://b:2'}]}",
                key="GET /i/{id}",
            )
        )
    )
    proxy = cfg.apis[0].routes["GET /i/{id}"].integration
    assert isinstance(proxy, HttpProxyIntegration)
    assert [(t.url, t.weight) for t in proxy.targets] == [("http://a:1", 3), ("http://b:2", 1)]


def test_http_proxy_uri_parameters_must_be_captured() -> None:
    line = one_error(api(route("{type: http_proxy, uri: 'http://a/{idd}'}", key="GET /x/{id}")))
    assert line == (
        f"{FILE}: apis[0].routes.GET /x/{{id}}.integration.uri: uri uses {{idd}}, which route "
        "'GET /x/{id}' does not capture (use a parameter of the route key (here: {id}))"
    )
    greedy = one_error(api(route("{type: http_proxy, uri: 'http://a/{p+}'}", key="ANY /{p+}")))
    assert "a greedy parameter is written without '+' (write {p})" in greedy
    parse(api(route("{type: http_proxy, uri: 'http://a/{p}'}", key="ANY /{p+}")))


def test_mock_latency_and_faults() -> None:
    cfg = parse(
        api(route("{type: mock, latency_ms: {p50: 5, p99: 50}, faults: {rate: 0.1, reset: true}}"))
    )
    mock = cfg.apis[0].routes["GET /x"].integration
    assert isinstance(mock, MockIntegration)
    assert mock.latency_ms is not None and (mock.latency_ms.p50, mock.latency_ms.p99) == (5, 50)
    assert mock.faults is not None and mock.faults.reset
    assert "p99 (5.0) is below p50 (10.0)" in one_error(
        api(route("{type: mock, latency_ms: {p50: 10, p99: 5}}"))
    )
    assert "latency_ms has both fixed and p50/p99" in one_error(
        api(route("{type: mock, latency_ms: {fixed: 1, p50: 1, p99: 2}}"))
    )
    assert "exactly one of status and reset" in one_error(
        api(route("{type: mock, faults: {rate: 0.1, status: 503, reset: true}}"))
    )
    assert "must be at most 1" in one_error(
        api(route("{type: mock, faults: {rate: 2, status: 503}}"))
    )


def test_mock_body_encoding() -> None:
    cfg = parse(
        api(route("{type: mock, body: hello}") + route("{type: mock, body: [1]}", key="GET /y")[8:])
    )
    first = cfg.apis[0].routes["GET /x"].integration
    second = cfg.apis[0].routes["GET /y"].integration
    assert isinstance(first, MockIntegration) and isinstance(second, MockIntegration)
    assert first.encoded_body() == (b"hello", "text/plain; charset=utf-8")
    assert second.encoded_body() == (b"[1]", "application/json")


@pytest.mark.parametrize(("style", "fmt"), [("http", "2.0"), ("rest", "1.0")])
def test_function_payload_format_defaults_to_style(style: str, fmt: str) -> None:
    cfg = parse(api(route("{type: function, handler: 'mod.sub:fn'}"), style=style))
    fn = cfg.apis[0].routes["GET /x"].integration
    assert isinstance(fn, FunctionIntegration)
    assert (fn.payload_format, fn.timeout_ms) == (fmt, 29_000)


def test_function_payload_format() -> None:
    cfg = parse(api(route("{type: function, handler: 'm:f', payload_format: 1.0}")))
    fn = cfg.apis[0].routes["GET /x"].integration
    assert isinstance(fn, FunctionIntegration) and fn.payload_format == "1.0"
    rest = one_error(api(route("{type: function, handler: 'm:f', payload_format: '2.0'}"), "rest"))
    assert "REST-style APIs send payload format 1.0" in rest
    assert "is not a handler reference" in one_error(api(route("{type: function, handler: m.f}")))


# --------------------------------------------------------------------------------------------------
# Other sections


def test_api_keys_need_exactly_one_form() -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    cfg = parse(
        api(f"api_keys: [{{id: a, value_sha256: {digest.upper()}}}, {{id: b, value: x}}]\n", "rest")
    )
    keys = cfg.apis[0].api_keys
    assert keys[0].value_sha256 == digest and keys[0].digest == digest
    assert keys[1].digest == hashlib.sha256(b"x").hexdigest()
    both = one_error(api(f"api_keys: [{{id: a, value: k, value_sha256: {digest}}}]\n", "rest"))
    assert "needs exactly one of value and value_sha256" in both
    assert "not a SHA-256 hex digest" in one_error(
        api("api_keys: [{id: a, value_sha256: ab}]\n", "rest")
    )


@pytest.mark.parametrize(
    ("stage", "message"),
    [("v1/x", "stage name 'v1/x' contains '/'"), ("/v1", "contains '/'"), ("a b", "is not valid")],
)
def test_stage_names(stage: str, message: str) -> None:
    line = one_error(api(f"stages: [{{name: '{stage}'}}]\n"))
    assert line.startswith(f"{FILE}: apis[0].stages[0].name: ") and message in line


def test_duplicate_stage_names() -> None:
    assert "stage 'v1' is defined twice" in one_error(api("stages: [{name: v1}, {name: v1}]\n"))


@pytest.mark.parametrize(
    ("base", "message"),
    [
        ("shop", "does not start with '/' (write /shop)"),
        ("/shop/", "ends with '/'"),
        ("/a//b", "empty segment"),
        ("/{x}", "is not allowed"),
    ],
)
def test_base_paths(base: str, message: str) -> None:
    line = one_error(api(f"base_path: '{base}'\n"))
    assert line.startswith(f"{FILE}: apis[0].base_path: ") and message in line


def test_base_path_root_means_none() -> None:
    assert parse(api("base_path: /\n")).apis[0].base_path is None


def test_hosts() -> None:
    assert parse(api("hosts: [API.Example.com, '*.example.org']\n")).apis[0].hosts == [
        "api.example.com",
        "*.example.org",
    ]
    assert "has a port" in one_error(api("hosts: ['a.example:8080']\n"))


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8080").port == 8080
    assert parse_listen("[::1]:0").host == "::1"
    assert parse_listen("unix:/tmp/gw.sock").unix_path == "/tmp/gw.sock"
    assert "port '99999'" in one_error("server: {listen: '127.0.0.1:99999'}")
    assert "must be in brackets" in one_error("server: {listen: '::1:80'}")
    assert "same address as the server" in one_error(
        "server: {listen: '127.0.0.1:80'}\nadmin: {listen: '127.0.0.1:80'}"
    )


def test_server_header() -> None:
    assert parse("server: {server_header: 'pygw/1'}").server.server_header == "pygw/1"
    assert parse("{}").server.server_header is None
    assert "is not a header value" in one_error('server: {server_header: "a\\r\\nX: y"}')


def test_state_backends() -> None:
    assert parse("state: {backend: redis, url: 'redis://r:6379/0', on_error: deny}").state.url
    assert "backend redis needs a url" in one_error("state: {backend: redis}")
    assert "url is used only by backend redis" in one_error("state: {url: 'redis://x'}")
    cluster = parse(
        "state: {backend: redis, url: 'redis://r:7000', cluster: true, timeout_ms: 200}"
    )
    assert cluster.state.cluster and cluster.state.timeout_ms == 200
    assert "cluster is used only by backend redis" in one_error("state: {cluster: true}")
    assert "remove { and } from key_prefix" in one_error(
        "state: {backend: redis, url: 'redis://r', cluster: true, key_prefix: '{gw}'}"
    )


def test_cors_and_resource_policy() -> None:
    cfg = parse(
        api(
            "cors: {allow_origins: ['https://a.example'], allow_methods: [get]}\n"
            "resource_policy: {allow_cidrs: [10.1.2.3/8, 127.0.0.1]}\n"
        )
    )
    a = cfg.apis[0]
    assert a.cors is not None and a.cors.allow_methods == ["GET"]
    assert a.resource_policy is not None
    assert a.resource_policy.allow_cidrs == ["10.0.0.0/8", "127.0.0.1/32"]
    assert "ends with '/'" in one_error(api("cors: {allow_origins: ['https://a.example/']}\n"))
    assert "allow_credentials" in one_error(
        api("cors: {allow_origins: ['*'], allow_credentials: true}\n")
    )
    assert "not an IP network" in one_error(api("resource_policy: {deny_cidrs: [nope]}\n"))


def test_python_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("python_path: [lib, /opt/x]\n")
    loaded = load_config(path)
    assert loaded.python_paths() == [tmp_path.resolve(), tmp_path.resolve() / "lib", Path("/opt/x")]
    assert loaded.resolve("keys/jwks.json") == tmp_path.resolve() / "keys/jwks.json"


POOL_ARN = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Ab12"


def cognito(arns: str = f'["{POOL_ARN}"]', more: str = "") -> str:
    return f"authorizers:\n  pool: {{type: cognito_user_pools, provider_arns: {arns}{more}}}\n"


def test_cognito_authorizer_derives_issuers_and_reads_plain_paths() -> None:
    text = api(
        cognito(f'["{POOL_ARN}", "{POOL_ARN}"]', ", jwks: keys/pool.json")
        + route(extra="authorizer: pool\nauthorization_scopes: [shop/read]"),
        style="rest",
    )
    config = parse_config(text, "cfg.yaml")
    auth = config.apis[0].authorizers["pool"]
    assert isinstance(auth, CognitoAuthorizerConfig)
    assert auth.issuers == ["https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Ab12"]
    assert auth.jwks == "file://keys/pool.json"
    assert auth.jwks_for(auth.issuers[0]) == "file://keys/pool.json"
    assert config.apis[0].routes["GET /x"].scopes == ["shop/read"]


def test_cognito_authorizer_problems() -> None:
    bad_arn = one_error(api(cognito('["arn:aws:iam::123:role/x"]') + route(), style="rest"))
    assert "is not a Cognito user pool ARN" in bad_arn and "userpool/POOL_ID" in bad_arn
    empty = one_error(api(cognito("[]") + route(), style="rest"))
    assert "provider_arns is empty" in empty
    two_headers = one_error(
        api(cognito(more=", identity_source: [header.a, header.b]") + route(), style="rest")
    )
    assert "exactly one header" in two_headers
    http = one_error(api(cognito() + route(extra="authorizer: pool")))
    assert "REST APIs only" in http and "type: jwt" in http
