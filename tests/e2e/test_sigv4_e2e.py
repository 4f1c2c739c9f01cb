"""SigV4 (AWS_IAM) authorization behind `pygw serve`, signed by botocore as AWS SDK users sign.

Requests are signed with botocore's `SigV4Auth` and sent byte for byte with http.client, so the
gateway sees exactly what was signed; each tampering is refused with AWS's error type.
"""

from __future__ import annotations

import datetime
import http.client
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.gateway_process import GatewayProcess

botocore = pytest.importorskip("botocore", reason="botocore signs the requests these tests send")

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

HANDLERS = Path(__file__).resolve().parents[1] / "integration" / "handlers"

KEY = "AKIAPYGWTESTKEY00001"
SECRET = "pygw-test-secret/abc+def"
TEMP_KEY = "ASIAPYGWTESTKEY00002"
TEMP_SECRET = "pygw-temp-secret"
TOKEN = "FwoGZXIvYXdzEFAKEtokenPYGW//+=="
DENIED_KEY = "AKIAPYGWTESTKEY00003"
ACCOUNT = "123456789012"

CREDENTIALS = f"""
- access_key_id: {KEY}
  secret_access_key: "{SECRET}"
  arn: arn:aws:iam::{ACCOUNT}:user/alice
  account_id: "{ACCOUNT}"
  user_id: AIDAPYGWALICE0000001
- access_key_id: {TEMP_KEY}
  secret_access_key: {TEMP_SECRET}
  session_token: "{TOKEN}"
  arn: arn:aws:sts::{ACCOUNT}:assumed-role/deployer/session-1
  account_id: "{ACCOUNT}"
- access_key_id: {DENIED_KEY}
  secret_access_key: other-secret
  arn: arn:aws:iam::{ACCOUNT}:user/mallory
  account_id: "{ACCOUNT}"
"""

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(handlers)s]
iam: {region: eu-west-1, credentials_file: creds.yaml}
apis:
  - name: orders-http
    type: http
    hosts: [http.test]
    routes:
      "ANY /{proxy+}":
        integration: {type: function, handler: "lambda_echo:echo_event"}
        authorization: aws_iam
      "GET /open":
        integration: {type: function, handler: "lambda_echo:echo_event"}
  - name: orders-rest
    type: rest
    hosts: [rest.test]
    stages: [{name: prod}]
    resource_policy:
      statements:
        - {Effect: Allow, Principal: {AWS: "arn:aws:iam::%(account)s:user/alice"},
           Action: "execute-api:Invoke", Resource: "execute-api:/*"}
        - {Effect: Allow, Principal: {AWS: "arn:aws:iam::%(account)s:role/deployer"},
           Resource: "execute-api:/prod/GET/*"}
        - {Effect: Deny, Principal: "*", Resource: "execute-api:/*/*/secret/*"}
    routes:
      "ANY /{proxy+}":
        integration: {type: function, handler: "lambda_echo:echo_event"}
        authorization: aws_iam
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("sigv4")
    (folder / "creds.yaml").write_text(CREDENTIALS)
    config = folder / "pygw.yaml"
    config.write_text(
        textwrap.dedent(CONFIG % {"handlers": json.dumps(str(HANDLERS)), "account": ACCOUNT})
    )
    with GatewayProcess(config) as process:
        yield process


def signed(
    gateway: GatewayProcess,
    method: str,
    host: str,
    target: str,
    body: bytes = b"",
    *,
    key: str = KEY,
    secret: str = SECRET,
    token: str | None = None,
    region: str = "eu-west-1",
    service: str = "execute-api",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    unsigned_payload: bool = False,
    when: datetime.datetime | None = None,
) -> tuple[str, str, dict[str, str], bytes]:
    """(method, the target as sent, headers, body) signed by botocore for `host:port`."""
    authority = f"{host}:{gateway.port}"
    request = AWSRequest(
        method=method,
        url=f"http://{authority}{target}",
        data=body,
        params=params or {},
        headers={"Host": authority, **(headers or {})},
    )
    if unsigned_payload:
        request.context["payload_signing_enabled"] = False
    signer = SigV4Auth(Credentials(key, secret, token), service, region)
    if when is not None:
        # botocore signs at "now"; a fixed moment is what an old (replayed) request carries.
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        request.context["timestamp"] = stamp
        request.headers["X-Amz-Date"] = stamp
        if token:
            request.headers["X-Amz-Security-Token"] = token
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        names = signer.signed_headers(signer.headers_to_sign(request))
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
    else:
        signer.add_auth(request)
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    sent = url.path + (f"?{url.query}" if url.query else "")
    payload = prepared.body or b""
    if isinstance(payload, str):
        payload = payload.encode()
    return method, sent, dict(prepared.headers.items()), payload


def send(
    gateway: GatewayProcess, method: str, target: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        has_length = any(name.lower() == "content-length" for name in headers)
        if not has_length and (body or method in ("POST", "PUT")):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        raw = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw)
    finally:
        connection.close()


def call(gateway: GatewayProcess, *args: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    return send(gateway, *signed(gateway, *args, **kwargs))


def test_get_with_query_needing_encoding_reaches_the_function(gateway: GatewayProcess) -> None:
    params = {"q": "a b/c*é+~", "empty": "", "z": "1"}
    status, _, event = call(gateway, "GET", "http.test", "/items/7", params=params)
    assert status == 200, event
    assert event["queryStringParameters"] == {"q": "a b/c*é+~", "empty": "", "z": "1"}
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam == {
        "accessKey": KEY,
        "accountId": ACCOUNT,
        "callerId": "AIDAPYGWALICE0000001",
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "userId": "AIDAPYGWALICE0000001",
    }


def test_post_with_body_and_encoded_unicode_path(gateway: GatewayProcess) -> None:
    body = json.dumps({"order": "ünïcode", "n": 3}).encode()
    target = "/orders/a%2Fb/caf%C3%A9"
    status, _, event = call(
        gateway, "POST", "http.test", target, body, headers={"Content-Type": "application/json"}
    )
    assert status == 200, event
    assert json.loads(event["body"]) == {"order": "ünïcode", "n": 3}
    # 2.0 events decode path parameters; the signature was over the path as sent.
    assert event["pathParameters"] == {"proxy": "orders/a/b/café"}


def test_unsigned_payload_accepted_and_body_passed(gateway: GatewayProcess) -> None:
    status, _, event = call(
        gateway, "PUT", "http.test", "/blob", b"raw bytes", unsigned_payload=True
    )
    assert status == 200, event
    assert event["requestContext"]["authorizer"]["iam"]["accessKey"] == KEY


def test_session_token_must_match(gateway: GatewayProcess) -> None:
    status, _, event = call(
        gateway, "GET", "rest.test", "/prod/reports", key=TEMP_KEY, secret=TEMP_SECRET, token=TOKEN
    )
    assert status == 200, event
    identity = event["requestContext"]["identity"]
    assert identity["accessKey"] == TEMP_KEY
    assert identity["accountId"] == ACCOUNT
    assert identity["userArn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/session-1"
    assert identity["caller"] == identity["user"] and identity["user"].startswith("AROA")
    # The same key with another token, or none at all, is not recognised.
    for token in ("another-token", None):
        status, headers, body = call(
            gateway, "GET", "rest.test", "/prod/reports", key=TEMP_KEY, secret=TEMP_SECRET,
            token=token,
        )  # fmt: skip
        assert status == 403
        assert headers["x-amzn-errortype"] == "UnrecognizedClientException"
        assert body == {"message": "The security token included in the request is invalid."}


def test_rest_identity_fields_in_v1_event(gateway: GatewayProcess) -> None:
    status, _, event = call(gateway, "GET", "rest.test", "/prod/things/1?x=1")
    assert status == 200, event
    identity = event["requestContext"]["identity"]
    assert identity["accessKey"] == KEY
    assert identity["caller"] == "AIDAPYGWALICE0000001"
    assert identity["user"] == "AIDAPYGWALICE0000001"
    assert identity["userArn"] == f"arn:aws:iam::{ACCOUNT}:user/alice"
    assert identity["accountId"] == ACCOUNT
    assert "authorizer" not in event["requestContext"]


def _refused(result: tuple[int, dict[str, str], Any], error_type: str) -> str:
    status, headers, body = result
    assert status == 403, body
    assert headers["x-amzn-errortype"] == error_type
    message: str = body.get("message") or body.get("Message")
    assert SECRET not in json.dumps(body)
    return message


def test_tampered_header_refused(gateway: GatewayProcess) -> None:
    method, target, headers, body = signed(
        gateway, "GET", "http.test", "/items/1", headers={"X-Tenant": "a"}
    )
    assert "x-tenant" in headers["Authorization"]
    message = _refused(
        send(gateway, method, target, {**headers, "X-Tenant": "b"}, body),
        "InvalidSignatureException",
    )
    assert message.startswith(
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. "
        "Consult the service documentation for details."
    )


def test_tampered_body_path_and_query_refused(gateway: GatewayProcess) -> None:
    method, target, headers, body = signed(gateway, "POST", "http.test", "/orders", b'{"n": 1}')
    _refused(send(gateway, method, target, headers, b'{"n": 2}'), "InvalidSignatureException")
    _refused(send(gateway, method, "/orders2", headers, body), "InvalidSignatureException")
    method, target, headers, body = signed(gateway, "GET", "http.test", "/q", params={"a": "1"})
    _refused(send(gateway, method, "/q?a=2", headers, body), "InvalidSignatureException")


def test_expired_and_future_dates_refused(gateway: GatewayProcess) -> None:
    now = datetime.datetime.now(datetime.UTC)
    old = call(gateway, "GET", "http.test", "/x", when=now - datetime.timedelta(minutes=16))
    assert _refused(old, "InvalidSignatureException").startswith("Signature expired: ")
    ahead = call(gateway, "GET", "http.test", "/x", when=now + datetime.timedelta(minutes=16))
    assert _refused(ahead, "InvalidSignatureException").startswith("Signature not yet current: ")
    # Within the 15-minute window either way, still accepted.
    recent = now - datetime.timedelta(minutes=14)
    assert call(gateway, "GET", "http.test", "/x", when=recent)[0] == 200


def test_wrong_region_service_or_key_refused(gateway: GatewayProcess) -> None:
    elsewhere = call(gateway, "GET", "http.test", "/x", region="us-east-1")
    assert _refused(elsewhere, "InvalidSignatureException") == (
        "Credential should be scoped to a valid region. "
    )
    assert _refused(
        call(gateway, "GET", "http.test", "/x", service="lambda"), "InvalidSignatureException"
    ).startswith("Credential should be scoped to correct service: 'execute-api'.")
    unknown = call(gateway, "GET", "http.test", "/x", key="AKIAUNKNOWN000000000")
    assert _refused(unknown, "UnrecognizedClientException") == (
        "The security token included in the request is invalid."
    )
    wrong_secret = call(gateway, "GET", "http.test", "/x", secret="not-the-secret")
    _refused(wrong_secret, "InvalidSignatureException")


def test_missing_and_incomplete_authorization(gateway: GatewayProcess) -> None:
    host = {"Host": f"http.test:{gateway.port}"}
    status, headers, body = send(gateway, "GET", "/x", host, b"")
    assert (status, body) == (403, {"message": "Missing Authentication Token"})
    assert headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    message = _refused(
        send(gateway, "GET", "/x", {**host, "Authorization": "AWS4-HMAC-SHA256 Foo=bar"}, b""),
        "IncompleteSignatureException",
    )
    assert "Authorization header requires 'Credential' parameter." in message
    # A route without authorization still answers anyone.
    status, _, _ = send(gateway, "GET", "/open", host, b"")
    assert status == 200


def test_resource_policy_statements(gateway: GatewayProcess) -> None:
    # Not named by any Allow statement: refused though the signature is good.
    status, headers, body = call(
        gateway, "GET", "rest.test", "/prod/things", key=DENIED_KEY, secret="other-secret"
    )
    assert status == 403 and headers["x-amzn-errortype"] == "AccessDeniedException"
    assert body["Message"].startswith(
        f"User: arn:aws:iam::{ACCOUNT}:user/mallory is not authorized to perform: "
        "execute-api:Invoke on resource: arn:aws:execute-api:eu-west-1:"
    )
    assert body["Message"].endswith("/prod/GET/things")
    # The role's sessions may GET, not POST.
    temp = {"key": TEMP_KEY, "secret": TEMP_SECRET, "token": TOKEN}
    assert call(gateway, "POST", "rest.test", "/prod/things", b"{}", **temp)[0] == 403
    # An explicit Deny wins over the Allow.
    status, _, body = call(gateway, "GET", "rest.test", "/prod/secret/plans")
    assert status == 403 and body["Message"].endswith(" with an explicit deny")
