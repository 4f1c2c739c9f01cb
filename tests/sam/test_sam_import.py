"""`pygw import-sam`: what a template becomes, and what is said about what pygw does differently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pygw.config.cfn import read_template
from pygw.config.load import ConfigError, load_config
from pygw.config.sam import SamOptions, import_sam, parse_assignments

SAM = Path(__file__).resolve().parent


def _write(tmp_path: Path, text: str, name: str = "template.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "app.py").write_text("def handler(event, context):\n    return {}\n")
    return path


def _routes(config: dict[str, Any], api: str) -> dict[str, Any]:
    found = next(a for a in config["apis"] if a["name"] == api)
    routes: dict[str, Any] = found["routes"]
    return routes


def test_short_form_tags_read_as_long_form(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "A: !Ref X\nB: !GetAtt Fn.Arn\nC: !Sub 'x-${Y}'\nD: !Join [',', [a, !Ref Z]]\n"
        "E: !If [Cond, 1, 2]\nF: !Select [0, !Split [',', 'a,b']]\n"
        "G: !FindInMap [M, k, v]\nH: !ImportValue shared\nI: !Condition C\n",
    )
    assert read_template(path) == {
        "A": {"Ref": "X"},
        "B": {"Fn::GetAtt": ["Fn", "Arn"]},
        "C": {"Fn::Sub": "x-${Y}"},
        "D": {"Fn::Join": [",", ["a", {"Ref": "Z"}]]},
        "E": {"Fn::If": ["Cond", 1, 2]},
        "F": {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]},
        "G": {"Fn::FindInMap": ["M", "k", "v"]},
        "H": {"Fn::ImportValue": "shared"},
        "I": {"Condition": "C"},
    }


_JSON_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Transform": "AWS::Serverless-2016-10-31",
    "Parameters": {"Name": {"Type": "String"}},
    "Resources": {
        "Fn": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": "src/",
                "Handler": "app.handler",
                "Runtime": "python3.12",
                "Environment": {"Variables": {"NAME": {"Fn::Sub": "${Name}-${AWS::Region}"}}},
                "Events": {
                    "Get": {"Type": "HttpApi", "Properties": {"Path": "/x", "Method": "get"}}
                },
            },
        }
    },
}


def test_json_template_with_parameter_override(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps(_JSON_TEMPLATE), "template.json")
    result = import_sam(path, SamOptions(parameter_overrides={"Name": "shop"}))
    assert result.errors == []
    route = _routes(result.config, "ServerlessHttpApi")["GET /x"]
    assert route["integration"]["environment"] == {"NAME": "shop-us-east-1"}
    assert route["integration"]["handler"] == "app:handler"
    assert route["integration"]["timeout_ms"] == 3000  # SAM's default Timeout

    # Without the override: the parameter has no Default, which is said.
    result = import_sam(path)
    assert "Parameters/Name: has no Default and no --parameter-overrides value" in (
        "\n".join(result.warnings)
    )


def test_every_unsupported_element_is_named_by_its_path(tmp_path: Path) -> None:
    text = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v1
      GatewayResponses: {DEFAULT_4XX: {}}
      Frobnicate: true
      Auth:
        Authorizers:
          Pool:
            UserPoolArn: arn:aws:cognito-idp:us-east-1:1:userpool/x
        DefaultAuthorizer: Pool
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.12
      Layers: [arn:aws:lambda:us-east-1:1:layer:x:1]
      Events:
        Get:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /x
            Method: get
            RequestParameters: [method.request.header.x]
        Bucket:
          Type: S3
          Properties: {Bucket: b}
  Table:
    Type: AWS::DynamoDB::Table
  Plain:
    Type: AWS::ApiGatewayV2::Api
"""
    result = import_sam(_write(tmp_path, text))
    warnings = "\n".join(result.warnings)
    for where in (
        "Resources/Api/Properties/GatewayResponses:",
        "Resources/Api/Properties/Frobnicate:",
        "Resources/Api/Properties/Auth/Authorizers/Pool: Cognito",
        "Resources/Fn/Properties/Layers:",
        "Resources/Fn/Properties/Events/Get/Properties/RequestParameters:",
        "Resources/Fn/Properties/Events/Bucket: a S3 event is not an API request",
        "Resources/Table: AWS::DynamoDB::Table is not served",
        "Resources/Plain: has no route pygw can serve",
    ):
        assert where in warnings
    # Fail closed: the Cognito default authorizer refuses, the route is not left open.
    route = _routes(result.config, "Api")["GET /x"]
    assert route["authorizer"] == "Pool"
    api = next(a for a in result.config["apis"] if a["name"] == "Api")
    assert api["authorizers"]["Pool"]["handler"] == "pygw.config.openapi:refuse_unresolved"
    assert result.errors == []


def test_non_python_function_without_endpoint_is_a_stand_in_and_an_error(tmp_path: Path) -> None:
    text = """
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: node/
      Handler: index.handler
      Runtime: nodejs20.x
      Events:
        Get: {Type: HttpApi, Properties: {Path: /x, Method: get}}
"""
    path = _write(tmp_path, text)
    result = import_sam(path)
    route = _routes(result.config, "ServerlessHttpApi")["GET /x"]
    assert route["integration"]["type"] == "mock"
    assert route["integration"]["status"] == 501
    assert any("--lambda-endpoint" in w for w in result.warnings)
    assert result.errors and "no route can answer" in result.errors[0]

    result = import_sam(path, SamOptions(function_endpoints={"Fn": "http://127.0.0.1:9001"}))
    assert result.errors == []
    assert _routes(result.config, "ServerlessHttpApi")["GET /x"]["integration"] == {
        "type": "lambda",
        "function_name": "Fn",
        "endpoint": "http://127.0.0.1:9001",
        "timeout_ms": 3000,
    }


def test_two_apis_on_one_stage_are_mounted_apart(tmp_path: Path) -> None:
    text = """
Resources:
  One: {Type: AWS::Serverless::HttpApi}
  Two: {Type: AWS::Serverless::HttpApi}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.12
      Events:
        A: {Type: HttpApi, Properties: {ApiId: !Ref One, Path: /a, Method: get}}
        B: {Type: HttpApi, Properties: {ApiId: !Ref Two, Path: /b, Method: get}}
"""
    result = import_sam(_write(tmp_path, text))
    assert result.errors == []
    two = next(a for a in result.config["apis"] if a["name"] == "Two")
    assert two["base_path"] == "/Two"
    assert any("pygw mounts it under /Two" in w for w in result.warnings)


def test_template_without_api_events_fails(tmp_path: Path) -> None:
    text = "Resources:\n  Q: {Type: AWS::SQS::Queue}\n"
    result = import_sam(_write(tmp_path, text))
    assert result.errors == ["the template has no Api or HttpApi events: there is nothing to serve"]


def test_not_a_template_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as failure:
        import_sam(_write(tmp_path, "openapi: 3.0.0\n"))
    assert "not a CloudFormation template" in str(failure.value)
    with pytest.raises(ConfigError) as failure:
        import_sam(_write(tmp_path, "Resources: [unclosed\n"))
    assert "not valid YAML or JSON" in str(failure.value)


def test_parameter_overrides_in_sam_spellings() -> None:
    assert parse_assignments(["A=1 B=2"], "-p") == {"A": "1", "B": "2"}
    assert parse_assignments(["ParameterKey=C,ParameterValue=x"], "-p") == {"C": "x"}
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parse_assignments(["novalue"], "--parameter-overrides")


def test_import_sam_command_writes_a_config_pygw_checks(tmp_path: Path) -> None:
    out = tmp_path / "conf" / "pygw.yaml"
    out.parent.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pygw",
            "import-sam",
            str(SAM / "rest_auth" / "template.yaml"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "warning: Resources: routes require an API key" in done.stderr
    text = out.read_text()
    assert text.startswith("# pygw configuration imported from")
    data = yaml.safe_load(text)
    route = data["apis"][0]["routes"]["GET /items/{id}"]
    # Folders are written relative to the output, so the config moves with its project.
    assert not Path(route["integration"]["python_path"][0]).is_absolute()
    assert (out.parent / route["integration"]["python_path"][0] / "items.py").is_file()
    loaded = load_config(out, env={"PYGW_API_KEY": "k"})
    assert loaded.config.apis[0].routes["GET /items/{id}"].cache is not None

    nothing = tmp_path / "queue.yaml"
    nothing.write_text("Resources:\n  Q: {Type: AWS::SQS::Queue}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pygw", "import-sam", str(nothing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "error: the template has no Api or HttpApi events" in done.stderr


def test_serve_sam_refuses_a_template_with_nothing_to_serve(tmp_path: Path) -> None:
    nothing = tmp_path / "queue.yaml"
    nothing.write_text("Resources:\n  Q: {Type: AWS::SQS::Queue}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pygw", "serve", "--sam", str(nothing), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "the template has no Api or HttpApi events: there is nothing to serve" in done.stderr


@pytest.mark.parametrize(
    ("authorizer", "message"),
    [
        ("{type: custom}", "a custom authorizer needs handler, or function_name and endpoint"),
        (
            "{type: custom, handler: 'a:b', function_name: f, endpoint: 'http://127.0.0.1:1'}",
            "handler and function_name/endpoint are both given",
        ),
        ("{type: custom, function_name: f}", "function_name and endpoint go together"),
        (
            "{type: custom, function_name: f, endpoint: 'ftp://x'}",
            "endpoint 'ftp://x' is not an http(s) base URL",
        ),
    ],
)
def test_custom_authorizer_runs_in_process_or_at_an_endpoint(
    tmp_path: Path, authorizer: str, message: str
) -> None:
    config = tmp_path / "pygw.yaml"
    config.write_text(
        "apis: [{name: a, type: http, authorizers: {auth: " + authorizer + "}, "
        "routes: {'GET /a': {integration: {type: mock}, authorizer: auth}}}]\n"
    )
    with pytest.raises(ConfigError) as failure:
        load_config(config)
    assert message in str(failure.value)
