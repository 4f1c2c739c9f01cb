"""Conformance with AWS: replays the requests behind the aws-parity recordings through `pygw serve`.

`test_lambda_aws_proxy_integration` recorded the 1.0 events a REST API sent its function for odd
paths (trailing and double slashes, slashes before and after the stage, encoded e-mails, repeated
query keys). Here the same requests go through a real pygw whose `ANY /{proxy+}` and
`ANY /hardcoded` routes call a function that returns its event as JSON, and the event pygw built is
compared with the recorded one field by field. Only placeholders (`<uuid:1>`, ...) and values
that belong to an AWS account or its CDN (account id, CloudFront headers, Via) are not compared.

`test_aws_proxy_response_payload_format_validation` recorded how AWS answers malformed function
results; the same results go through pygw and must get the same statuses, bodies and headers.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.e2e.gateway_process import GatewayProcess

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
SNAPSHOT = TESTDATA / "aws-parity" / "test_apigateway_lambda.snapshot.json"
HANDLERS = Path(__file__).resolve().parent / "handlers"
_PREFIX = "tests/aws/services/apigateway/test_apigateway_lambda.py::"

_PLACEHOLDER = re.compile(r"^<[^<>]+>$")
# Headers only AWS's CDN adds, and values that name an AWS account or deployment.
_INFRA_HEADERS = re.compile(
    r"^(cloudfront-.*|via|x-amz-cf-id|x-amz-cf-pop|x-cache|x-amz-apigw-id)$"
)
_ACCOUNT_FIELDS = {"accountId", "apiId", "deploymentId", "domainName", "domainPrefix", "resourceId"}

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(handlers)s]
apis:
  - name: parity
    type: rest
    stages: [{name: stage}]
    routes:
      "ANY /{proxy+}":
        integration: {type: function, handler: "lambda_echo:echo_event"}
      "ANY /hardcoded":
        integration: {type: function, handler: "lambda_echo:echo_event"}
      "ANY /format":
        integration: {type: function, handler: "lambda_echo:result_from_body"}
"""

# What the recorded test sent (python-requests, whose defaults are spelled out here).
_GET_HEADERS = {
    "User-Agent": "python-requests/testing",
    "tEsT-HEADeR": "aValUE",
    "authorization": "random-value",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
}
_PARAMS = (
    "dateTimeOffset=2023-06-12T18:05:10.123456+00:00&email=test%2Balias@gmail.com"
    "&plus=test+alias@gmail.com&url=https://www.google.com/&whitespace=foo%20bar&zhash=abort/"
)
_EMAILS = "user/test%2Balias@gmail.com/plus/test+alias@gmail.com"
REPLAYS: dict[str, tuple[str, str]] = {
    "invocation-payload-without-trailing-slash": ("GET", "/stage/proxy-value"),
    "invocation-payload-with-trailing-slash": ("GET", "/stage/proxy-value/"),
    "invocation-payload-with-double-slash": ("GET", "/stage/proxy-value//double-slash"),
    "invocation-payload-with-prepended-slash-to-stage": ("GET", "//stage/proxy-value"),
    "invocation-payload-with-prepended-slash": ("GET", "/stage//proxy-value"),
    "invocation-payload-without-trailing-slash-and-query-params": (
        "GET",
        "/stage/proxy-value?urlparam=test",
    ),
    "invocation-payload-with-trailing-slash-and-query-params": (
        "GET",
        "/stage/proxy-value/?urlparam=test",
    ),
    "invocation-payload-with-path-encoded-email": ("GET", f"/stage/proxy-value/api/{_EMAILS}"),
    "invocation-payload-with-params-encoding": ("GET", f"/stage/proxy-value/api?{_PARAMS}"),
    "invocation-payload-with-params-encoding-multi": (
        "POST",
        "/stage/proxy-value?category=electronics&category=books&price=10&price=20&price=30",
    ),
    "invocation-hardcoded": ("GET", "/stage//hardcoded"),
}

# The function results behind each recorded answer (the recorded test posted them as its body).
FORMAT_CASES: dict[str, tuple[Any, int]] = {
    "invoke-api-no-body": ({"statusCode": 200}, 200),
    "invoke-api-with-headers": (
        {"statusCode": 200, "headers": {"test-header": "value", "header-bool": True}},
        200,
    ),
    "invoke-api-with-headers-null": ({"statusCode": 200, "headers": None}, 200),
    "invoke-api-wrong-format": ({"statusCode": 200, "wrongValue": "value"}, 502),
    "invoke-api-empty-response": (None, 502),
    "invoke-api-b64-encoded-true": (
        {"statusCode": 200, "body": "dGVzdC1kYXRh", "isBase64Encoded": True},
        200,
    ),
    "invoke-api-b64-encoded-false": ({"statusCode": 200, "body": "dGVzdC1kYXRh"}, 200),
    "invoke-api-multi-headers-valid": (
        {"statusCode": 200, "multiValueHeaders": {"test-multi": ["value1", "value2"]}},
        200,
    ),
    "invoke-api-multi-headers-overwrite": (
        {
            "statusCode": 200,
            "multiValueHeaders": {"test-multi": ["value-multi"]},
            "headers": {"test-multi": "value-solo"},
        },
        200,
    ),
    "invoke-api-multi-headers-overwrite-casing": (
        {
            "statusCode": 200,
            "multiValueHeaders": {"tesT-Multi": ["value-multi"]},
            "headers": {"test-multi": "value-solo"},
        },
        200,
    ),
    "invoke-api-multi-headers-invalid": (
        {"statusCode": 200, "multiValueHeaders": {"test-multi-invalid": "value1"}},
        502,
    ),
    "invoke-api-invalid-status-code": ({"statusCode": "test"}, 502),
    "invoke-api-status-code-str": ({"statusCode": "201"}, 201),
    "invoke-api-just-string": ("justAString", 502),
    "invoke-api-only-headers": ({"headers": {"test-header": "value"}}, 200),
}


def _recorded(test: str) -> dict[str, Any]:
    if not SNAPSHOT.exists():
        pytest.skip(f"{SNAPSHOT} not found: the aws-parity recordings live outside the repository")
    data = json.loads(SNAPSHOT.read_text())
    return data[_PREFIX + test]["recorded-content"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if not SNAPSHOT.exists():
        pytest.skip(f"{SNAPSHOT} not found: the aws-parity recordings live outside the repository")
    folder = tmp_path_factory.mktemp("parity")
    config = folder / "pygw.yaml"
    config.write_text(textwrap.dedent(CONFIG % {"handlers": json.dumps(str(HANDLERS))}))
    process = GatewayProcess(config)
    try:
        process.start()
    except RuntimeError as failed:
        if "'function' is not available" in str(failed):
            pytest.skip("the function integration is not wired into the runtime yet")
        raise
    yield process
    process.stop()


def _compare(path: str, recorded: Any, actual: Any, problems: list[str]) -> None:
    if isinstance(recorded, str) and _PLACEHOLDER.match(recorded):
        if actual is None:
            problems.append(f"{path}: missing (recorded a value, {recorded})")
        return
    if path == "event.body" and isinstance(recorded, dict) and isinstance(actual, str):
        # The recorder stored a JSON body parsed; the event carries it as text.
        actual = json.loads(actual)
    if isinstance(recorded, dict):
        if not isinstance(actual, dict):
            problems.append(f"{path}: recorded an object, pygw sent {actual!r}")
            return
        for key in recorded.keys() | actual.keys():
            if path.endswith(("headers", "Headers")) and _INFRA_HEADERS.match(key.lower()):
                continue
            where = f"{path}.{key}"
            if key not in actual:
                problems.append(f"{where}: missing")
            elif key not in recorded:
                problems.append(f"{where}: not in the recording ({actual[key]!r})")
            elif key in _ACCOUNT_FIELDS and path.endswith("requestContext"):
                continue
            else:
                _compare(where, recorded[key], actual[key], problems)
        return
    if isinstance(recorded, list) and isinstance(actual, list) and len(recorded) == len(actual):
        for index, (one, other) in enumerate(zip(recorded, actual, strict=True)):
            _compare(f"{path}[{index}]", one, other, problems)
        return
    if recorded != actual:
        problems.append(f"{path}: recorded {recorded!r}, pygw sent {actual!r}")


@pytest.mark.parametrize("name", list(REPLAYS))
async def test_proxy_event_matches_recording(gateway: GatewayProcess, name: str) -> None:
    recorded = _recorded("test_lambda_aws_proxy_integration")[name]
    method, target = REPLAYS[name]
    headers = dict(_GET_HEADERS)
    data = None
    if method == "POST":
        headers = {
            "User-Agent": "python-requests/testing",
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/json;charset=utf-8",
            "aUThorization": "Bearer token123;API key456",
        }
        data = json.dumps({"message": "hello world"}).encode()
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            URL(gateway.url + target, encoded=True),
            headers=headers,
            data=data,
            skip_auto_headers=("Content-Type",),
        ) as resp:
            assert resp.status == 200, await resp.text()
            event = json.loads(await resp.text())
    problems: list[str] = []
    _compare("event", recorded, event, problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", list(FORMAT_CASES))
async def test_malformed_results_answered_as_recorded(gateway: GatewayProcess, name: str) -> None:
    recorded = _recorded("test_aws_proxy_response_payload_format_validation")[name]
    result, status = FORMAT_CASES[name]
    data = json.dumps(result).encode() if result is not None else None
    async with aiohttp.ClientSession() as session:
        async with session.post(
            gateway.url + "/stage/format",
            data=data,
            headers={"User-Agent": "python/test", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == status
            text = await resp.text()
            joined: dict[str, list[str]] = {}
            for raw_name, raw_value in resp.raw_headers:
                joined.setdefault(raw_name.decode(), []).append(raw_value.decode())
    try:
        content: Any = json.loads(text)
    except json.JSONDecodeError:
        content = text
    assert content == recorded["content"]
    for header, value in recorded.get("headers", {}).items():
        if _INFRA_HEADERS.match(header.lower()) or header.lower() in (
            "connection",
            "date",
            "x-amzn-trace-id",
        ):
            continue
        assert header in joined, f"{header} missing from {sorted(joined)}"
        if not _PLACEHOLDER.match(value):
            assert ", ".join(joined[header]) == value
    if "headers" in recorded:
        # Nothing the function did not ask for, beyond the gateway's own headers.
        extra = {
            h
            for h in joined
            if h not in recorded["headers"]
            and h.lower() not in ("x-request-id", "date", "server", "x-amzn-requestid")
            and not h.lower().startswith("ratelimit-")
        }
        assert not extra, extra
