"""SigV4 verification, the iam config, resource-policy statements and the OpenAPI import of
AWS_IAM, without a server (tests/e2e/test_sigv4_e2e.py signs real requests to `pygw serve`)."""

from __future__ import annotations

import calendar
import json
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pygw.config.load import ConfigError, LoadedConfig, parse_config
from pygw.config.model import IamPolicyStatement
from pygw.config.openapi import import_openapi
from pygw.context import RequestContext
from pygw.errors import GatewayError
from pygw.observe.metrics import Metrics
from pygw.request import Request
from pygw.runtime import compile_runtime
from pygw.sigv4 import (
    IamCredential,
    IamPrincipal,
    SigV4Error,
    SigV4Verifier,
    canonical_path,
    canonical_query,
    load_credentials_file,
)
from pygw.stages.resource_policy import PrincipalPolicyStage

botocore = pytest.importorskip("botocore", reason="botocore is the reference signer")

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

ALICE = IamPrincipal("AKIDALICE", "arn:aws:iam::111122223333:user/alice", "111122223333", "AIDA1")
BOB = IamPrincipal(
    "AKIDBOB", "arn:aws:sts::111122223333:assumed-role/ops/bob", "111122223333", "AROA2:bob"
)
VERIFIER = SigV4Verifier(
    {
        "AKIDALICE": IamCredential(ALICE, "alice-secret"),
        "AKIDBOB": IamCredential(BOB, "bob-secret", "bob-token"),
    },
    "us-west-2",
)


def sign(
    url: str, *, key: str = "AKIDALICE", secret: str = "alice-secret", token: str | None = None
) -> tuple[str, dict[str, list[str]]]:
    request = AWSRequest(method="GET", url=url, headers={"Host": "api.test"})
    SigV4Auth(Credentials(key, secret, token), "execute-api", "us-west-2").add_auth(request)
    target = url.split("api.test", 1)[1]
    headers = SigV4Verifier.header_table(
        (name.encode(), value.encode()) for name, value in request.headers.items()
    )
    return target, headers


def test_canonical_forms_match_botocore() -> None:
    assert canonical_path("/prod/a%2Fb/caf%C3%A9") == "/prod/a%252Fb/caf%25C3%25A9"
    assert canonical_path("/prod//x/./y/../z/") == "/prod/x/z/"
    assert canonical_path("") == "/"
    assert canonical_query("b=2&a=x+y&a=%2a&c") == "a=%2A&a=x%20y&b=2&c="


def test_verifies_and_names_the_principal() -> None:
    target, headers = sign("http://api.test/prod/items?a=1")
    assert VERIFIER.verify("GET", target, headers, b"") == ALICE
    bob = {"key": "AKIDBOB", "secret": "bob-secret", "token": "bob-token"}
    target, headers = sign("http://api.test/x", **bob)
    assert VERIFIER.verify("GET", target, headers, b"") == BOB


def test_refusals_carry_aws_types_and_never_the_secret() -> None:
    target, headers = sign("http://api.test/prod/items")
    with pytest.raises(SigV4Error) as wrong_method:
        VERIFIER.verify("DELETE", target, headers, b"")
    assert wrong_method.value.error_type == "InvalidSignatureException"
    assert "alice-secret" not in wrong_method.value.message
    assert "DELETE\n/prod/items\n" in wrong_method.value.message  # the canonical request, as AWS
    later = time.time() + 3600
    with pytest.raises(SigV4Error) as expired:
        VERIFIER.verify("GET", target, headers, b"", now=later)
    assert expired.value.message.startswith("Signature expired: ")
    assert expired.value.message.endswith(" - 15 min.)")
    with pytest.raises(SigV4Error) as no_token:
        VERIFIER.verify("GET", *sign("http://api.test/x", key="AKIDBOB", secret="bob-secret"), b"")
    assert no_token.value.error_type == "UnrecognizedClientException"
    with pytest.raises(SigV4Error) as no_auth:
        VERIFIER.verify("GET", "/x", {"host": ["api.test"]}, b"")
    assert no_auth.value.error_type == "MissingAuthenticationTokenException"


def test_the_date_header_may_stand_for_x_amz_date() -> None:
    signer = SigV4Auth(Credentials("AKIDALICE", "alice-secret"), "execute-api", "us-west-2")
    request = AWSRequest(
        method="GET",
        url="http://api.test/d",
        headers={"Host": "api.test", "Date": "Mon, 07 Dec 2026 05:00:00 GMT"},
    )
    signer.add_auth(request)  # botocore re-dates the Date header to now
    headers = SigV4Verifier.header_table(
        (n.encode(), v.encode()) for n, v in request.headers.items()
    )
    assert "x-amz-date" not in headers
    assert VERIFIER.verify("GET", "/d", headers, b"") == ALICE


def test_credentials_file_errors_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "creds.yaml"
    path.write_text("- {access_key_id: AK1, secret_access_key: s, arn: 'arn:aws:iam::1:user/a'}")
    with pytest.raises(ValueError, match="entry 0 lacks account_id"):
        load_credentials_file(path)
    path.write_text(
        "- {access_key_id: AK1, secret_access_key: s, arn: 'arn:x', account_id: '123456789012'}\n"
        "- {access_key_id: AK1, secret_access_key: t, arn: 'arn:x', account_id: '123456789012'}"
    )
    with pytest.raises(ValueError, match="entry 1: access_key_id 'AK1' is listed twice"):
        load_credentials_file(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_credentials_file(path.with_name("absent.yaml"))
    shown = repr(IamCredential(IamPrincipal("AK1", "arn:x", "1", "AIDA"), "supersecret", "tok"))
    assert "supersecret" not in shown and "tok" not in shown


CONFIG = """
iam: {region: us-west-2, credentials_file: creds.yaml}
apis:
  - name: shop
    type: rest
    stages: [{name: prod}]
    routes:
      "GET /x": {integration: {type: mock}, authorization: aws_iam}
"""


def test_config_checks() -> None:
    no_iam = CONFIG.replace("iam: {region: us-west-2, credentials_file: creds.yaml}\n", "")
    with pytest.raises(ConfigError) as missing:
        parse_config(no_iam, "cfg.yaml", env={})
    assert "aws_iam authorization needs the top-level iam section" in str(missing.value)
    both = CONFIG.replace("authorization: aws_iam", "authorization: aws_iam, authorizer: a")
    with pytest.raises(ConfigError) as twice:
        parse_config(both, "cfg.yaml", env={})
    assert "either by SigV4 (aws_iam) or by an authorizer" in str(twice.value)
    with pytest.raises(ConfigError) as region:
        parse_config(CONFIG.replace("us-west-2", "westus"), "cfg.yaml", env={})
    assert "'westus' is not an AWS region" in str(region.value)


def test_missing_credentials_file_is_a_config_error(tmp_path: Path) -> None:
    config = parse_config(textwrap.dedent(CONFIG), "cfg.yaml", env={})
    loaded = LoadedConfig(config=config, path=tmp_path / "cfg.yaml", folder=tmp_path)
    with pytest.raises(ConfigError) as failure:
        compile_runtime(loaded, Metrics())
    assert "iam.credentials_file" in str(failure.value)
    assert "cannot read" in str(failure.value)


def _ctx(method: str, path: str, principal: IamPrincipal | None) -> RequestContext:
    ctx = RequestContext(Request.build(method, "/prod" + path), "r", path, {}, {}, "1.2.3.4", 0.0)
    ctx.iam = principal
    return ctx


def test_principal_statements() -> None:
    arn = "arn:aws:execute-api:us-west-2:000000000000:abc123"
    statements = [
        IamPolicyStatement.model_validate(s)
        for s in (
            {"Effect": "Allow", "Principal": {"AWS": ALICE.arn}, "Resource": "execute-api:/*"},
            {
                "Effect": "Allow",
                "Principal": {"AWS": ["arn:aws:iam::111122223333:role/ops"]},
                "Resource": [f"{arn}/prod/GET/items/*"],
            },
            {"Effect": "Deny", "Principal": "*", "Resource": "execute-api:/prod/*/admin*"},
        )
    ]
    stage = PrincipalPolicyStage(statements, arn, "prod")
    assert stage.check(_ctx("POST", "/items", ALICE)) is None
    assert stage.check(_ctx("GET", "/items/9", BOB)) is None  # the role covers its sessions
    for method, path, who in (("POST", "/items", BOB), ("GET", "/admin/x", ALICE)):
        with pytest.raises(GatewayError) as refused:
            stage.check(_ctx(method, path, who))
        assert refused.value.headers == {"x-amzn-ErrorType": "AccessDeniedException"}
    assert refused.value.detail is not None and refused.value.detail.endswith(
        f"{arn}/prod/GET/admin/x with an explicit deny"
    )


def test_openapi_aws_iam_imports(tmp_path: Path) -> None:
    spec = {
        "openapi": "3.0.1",
        "info": {"title": "t", "version": "1"},
        "components": {
            "securitySchemes": {
                "sigv4": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "x-amazon-apigateway-authtype": "awsSigv4",
                }
            }
        },
        "paths": {
            "/a": {
                "get": {
                    "security": [{"sigv4": []}],
                    "x-amazon-apigateway-integration": {"type": "mock"},
                }
            },
            "/b": {
                "get": {
                    "x-amazon-apigateway-auth": {"type": "AWS_IAM"},
                    "x-amazon-apigateway-integration": {"type": "mock"},
                }
            },
        },
    }
    path = tmp_path / "api.json"
    path.write_text(json.dumps(spec))
    result = import_openapi(path, style="http")
    routes = result.config["apis"][0]["routes"]
    assert routes["GET /a"]["authorization"] == "aws_iam"
    assert routes["GET /b"]["authorization"] == "aws_iam"
    assert result.config["iam"]["credentials_file"] == "iam-credentials.yaml"
    assert not any("x-amazon-apigateway-auth " in w for w in result.warnings)
    (tmp_path / "iam-credentials.yaml").write_text(
        "- {access_key_id: AK1, secret_access_key: s, arn: 'arn:aws:iam::123456789012:user/a', "
        "account_id: '123456789012'}"
    )
    config = parse_config(yaml.safe_dump(result.config), "imported.yaml", env={})
    loaded = LoadedConfig(config=config, path=tmp_path / "imported.yaml", folder=tmp_path)
    compile_runtime(loaded, Metrics())


def test_iso_time_parse_is_utc() -> None:
    # The verifier's clock reading of x-amz-date is UTC whatever the local zone.
    target, headers = sign("http://api.test/t")
    stamp = headers["x-amz-date"][0]
    signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    assert VERIFIER.verify("GET", target, headers, b"", now=signed_at + 899) == ALICE
    with pytest.raises(SigV4Error):
        VERIFIER.verify("GET", target, headers, b"", now=signed_at + 901)


def test_the_bench_signer_agrees(tmp_path: Path) -> None:
    """`pygw bench` signs its SigV4 scenario with its own few lines of hashlib and hmac."""
    from bench.scenarios import REQUEST_PATH, SIGV4_REGION, sigv4_material

    credentials, headers = sigv4_material(tmp_path)
    verifier = SigV4Verifier(load_credentials_file(credentials), SIGV4_REGION)
    table = SigV4Verifier.header_table((n.encode(), v.encode()) for n, v in headers.items())
    assert verifier.verify("GET", REQUEST_PATH, table, None).arn.endswith(":user/bench")


def test_statements_without_iam_routes_warn(tmp_path: Path) -> None:
    (tmp_path / "creds.yaml").write_text(
        "- {access_key_id: AK1, secret_access_key: s, arn: 'arn:aws:iam::123456789012:user/a', "
        "account_id: '123456789012'}"
    )
    text = CONFIG.replace("authorization: aws_iam", "authorization: none") + textwrap.indent(
        "resource_policy:\n  statements: [{Effect: Deny, Principal: '*', Resource: '*'}]\n",
        "    ",
    )
    config = parse_config(text, "cfg.yaml", env={})
    loaded = LoadedConfig(config=config, path=tmp_path / "cfg.yaml", folder=tmp_path)
    runtime = compile_runtime(loaded, Metrics())
    assert any("this API has none" in w.message for w in runtime.warnings)
