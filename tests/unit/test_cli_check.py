"""`pygw check` on broken configurations: exit 1 and `FILE: path: what is wrong (what to do)`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pygw.cli import main

ROUTE = '"GET /a": {integration: {type: mock}}'

BROKEN = {
    "unknown top-level key": ("servr: {}\napis: []", ["servr", "server"]),
    "misspelt integration key": (
        "apis: [{name: a, type: http, routes: {'GET /a': {integration: {type: mock, stauts: 2}}}}]",
        ["stauts", "status"],
    ),
    "unknown integration type": (
        "apis: [{name: a, type: http, routes: {'GET /a': {integration: {type: aws_lambda}}}}]",
        ["integration", "aws_lambda"],
    ),
    "bad route key": (
        "apis: [{name: a, type: http, routes: {'GET /b/{x': {integration: {type: mock}}}}]",
        ["GET /b/{x"],
    ),
    "greedy not last": (
        "apis: [{name: a, type: http, routes: {'GET /{p+}/x': {integration: {type: mock}}}}]",
        ["{p+}"],
    ),
    "conflicting routes": (
        "apis: [{name: a, type: http, routes: {'GET /a/{x}': {integration: {type: mock}},"
        " 'GET /a/{y}': {integration: {type: mock}}}}]",
        ["GET /a/{x}", "GET /a/{y}"],
    ),
    "unknown authorizer": (
        "apis: [{name: a, type: http, routes: {'GET /a': {integration: {type: mock},"
        " authorizer: nobody}}}]",
        ["nobody"],
    ),
    "rest-only key in an http api": (
        f"apis: [{{name: a, type: http, cache: {{ttl_s: 5}}, routes: {{{ROUTE}}}}}]",
        ["cache"],
    ),
    "compression in an http api": (
        f"apis: [{{name: a, type: http, minimum_compression_size: 1024, routes: {{{ROUTE}}}}}]",
        ["apis[0].minimum_compression_size", "AWS's HTTP APIs do not", "type rest"],
    ),
    "compression size out of range": (
        f"apis: [{{name: a, type: rest, minimum_compression_size: 10485761, routes: {{{ROUTE}}}}}]",
        ["apis[0].minimum_compression_size", "10485760"],
    ),
    "wrong type": (
        f"server: {{workers: many}}\napis: [{{name: a, type: http, routes: {{{ROUTE}}}}}]",
        ["server.workers"],
    ),
    "missing environment variable": (
        f"admin: {{token: '${{env:PYGW_TEST_SURELY_UNSET}}'}}\n"
        f"apis: [{{name: a, type: http, routes: {{{ROUTE}}}}}]",
        ["PYGW_TEST_SURELY_UNSET"],
    ),
    "unknown stage variable": (
        "apis: [{name: a, type: http, routes: {'GET /a': {integration: {type: http_proxy,"
        " uri: 'http://${stageVariables.host}/x'}}}}]",
        ["host"],
    ),
    "yaml syntax error": ("apis: [{name: a\n  type: http", ["line"]),
    "two apis on one mount": (
        f"apis: [{{name: a, type: http, routes: {{{ROUTE}}}}},"
        f" {{name: b, type: http, routes: {{{ROUTE}}}}}]",
        ["a", "b"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_names_file_field_and_fix(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, mentions = BROKEN[case]
    config = tmp_path / "broken.yaml"
    config.write_text(textwrap.dedent(text))
    assert main(["check", "-c", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert lines, case
    for line in lines:
        assert line.startswith(f"{config}: "), line
        assert line.endswith(")"), line  # every message ends with the fix in parentheses
    for mention in mentions:
        assert mention in err, (case, err)


@pytest.mark.parametrize(
    "example",
    [
        "examples/quickstart.yaml",
        "examples/full.yaml",
        "examples/lambda.yaml",
        "examples/chat/chat.yaml",
        "deploy/config.yaml",
    ],
)
def test_check_accepts_the_examples(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parents[2] / example
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr().err
    assert "ok" in capsys.readouterr().out


def test_a_config_gets_its_own_module_even_if_another_had_that_name(tmp_path: Path) -> None:
    """Handler modules are cached by name per process: a second config (or a reload) whose own
    folder provides `shop` must get its `shop`, not the first one's."""
    from pygw.loader import load_callable

    for name, answer in (("first", 1), ("second", 2)):
        folder = tmp_path / name
        (folder / "shop").mkdir(parents=True)
        (folder / "shop" / "__init__.py").write_text("")
        (folder / "shop" / "handlers.py").write_text(f"def create(e, c):\n    return {answer}\n")
        handler = load_callable("shop.handlers:create", [folder])
        assert handler({}, None) == answer
