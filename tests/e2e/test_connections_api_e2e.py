"""boto3's `apigatewaymanagementapi` client against `pygw serve`, as AWS's examples use it.

Each WebSocket client asks its handler who it is; the handler answers with the connection id and
the endpoint AWS's examples build from the event
(`endpoint_url=f"http://{domainName}/{stage}"`). The test then drives post_to_connection,
get_connection and delete_connection through that endpoint on the API's own listener, signed with
a key of the iam credentials file, with one gateway process and with two workers (the calls
then reach connections held by the other worker too).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from pygw.integrations.ws_connections import worker_of
from tests.e2e.gateway_process import GatewayProcess

boto3 = pytest.importorskip("boto3", reason="boto3's own client is what these tests drive")

from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

KEY = "AKIAPYGWCONNECTIONS1"
SECRET = "connections-secret"
REGION = "eu-central-1"

HANDLER = """
import json


def whoami(event, context):
    ctx = event["requestContext"]
    return {
        "statusCode": 200,
        "body": json.dumps(
            {"id": ctx["connectionId"], "domainName": ctx["domainName"], "stage": ctx["stage"]}
        ),
    }
"""

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
server: {workers: %(workers)d, drain_timeout_s: 1}
python_path: [%(folder)s]
iam: {region: %(region)s, credentials_file: creds.yaml}
apis:
  - name: chat
    type: websocket
    stages: [{name: prod}]
    connections_api: {authorization: aws_iam}
    routes:
      $default: {integration: {type: function, handler: "ws_whoami:whoami"}, route_response: true}
"""

CREDENTIALS = f"""
- access_key_id: {KEY}
  secret_access_key: {SECRET}
  arn: arn:aws:iam::123456789012:user/pusher
  account_id: "123456789012"
"""


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, int]]:
    workers: int = request.param
    folder = tmp_path_factory.mktemp(f"connections-{workers}")
    (folder / "ws_whoami.py").write_text(HANDLER)
    (folder / "creds.yaml").write_text(CREDENTIALS)
    config = folder / "pygw.yaml"
    config.write_text(
        textwrap.dedent(CONFIG)
        % {"workers": workers, "folder": json.dumps(str(folder)), "region": REGION}
    )
    with GatewayProcess(config) as process:
        yield process, workers


def management(endpoint: str, secret: str = SECRET) -> Any:
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.id = ""
        self.endpoint = ""

    async def ask(self) -> None:
        await self.ws.send_str("whoami")
        answer = json.loads((await self.ws.receive(timeout=10)).data)
        self.id = answer["id"]
        self.endpoint = f"http://{answer['domainName']}/{answer['stage']}"


async def connect_clients(session: aiohttp.ClientSession, url: str, workers: int) -> list[Client]:
    """Two clients; with two workers, one on each (the kernel spreads connections, so a few
    attempts may be needed; the extra ones are closed). A connection id carries the index of
    the worker that holds it."""
    kept: dict[int | None, Client] = {}
    extra: list[Client] = []
    for attempt in range(40):
        client = Client(await session.ws_connect(url + "/prod"))
        await client.ask()
        holder = worker_of(client.id) if workers == 2 else attempt
        if holder not in kept:
            kept[holder] = client
        else:
            extra.append(client)
        if len(kept) == 2:
            break
    for client in extra:
        await client.ws.close()
    assert len(kept) == 2, "the two workers did not both take a connection"
    return list(kept.values())


async def test_boto3_management_api(gateway: tuple[GatewayProcess, int]) -> None:
    process, workers = gateway
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        first, second = await connect_clients(session, process.url, workers)
        # The endpoint built from the event is this listener, port included.
        assert first.endpoint == f"{process.url}/prod"
        api = management(first.endpoint)

        for client in (first, second):
            text = f"hello {client.id}"
            await asyncio.to_thread(
                api.post_to_connection, ConnectionId=client.id, Data=text.encode()
            )
            assert (await client.ws.receive(timeout=10)).data == text

        described = await asyncio.to_thread(api.get_connection, ConnectionId=second.id)
        assert described["Identity"]["SourceIp"] == "127.0.0.1"
        assert described["Identity"]["UserAgent"].startswith("Python")
        assert described["ConnectedAt"] <= described["LastActiveAt"]

        too_long = b"x" * (128 * 1024 + 1)
        with pytest.raises(ClientError) as large:
            await asyncio.to_thread(api.post_to_connection, ConnectionId=first.id, Data=too_long)
        assert large.value.response["Error"]["Code"] == "PayloadTooLargeException"
        assert large.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        # 128 KiB exactly is allowed.
        await asyncio.to_thread(
            api.post_to_connection, ConnectionId=first.id, Data=b"y" * (128 * 1024)
        )
        assert len((await first.ws.receive(timeout=10)).data) == 128 * 1024

        await asyncio.to_thread(api.delete_connection, ConnectionId=second.id)
        closed = await second.ws.receive(timeout=10)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await second.ws.close()
        for call in (api.post_to_connection, api.get_connection, api.delete_connection):
            kwargs: dict[str, Any] = {"ConnectionId": second.id}
            if call == api.post_to_connection:
                kwargs["Data"] = b"late"
            gone: list[BaseException] = []
            for _ in range(50):  # the close reaches the registry asynchronously
                try:
                    await asyncio.to_thread(call, **kwargs)
                except api.exceptions.GoneException as error:
                    gone.append(error)
                    break
                await asyncio.sleep(0.05)
            assert gone, f"{call.__name__} did not raise GoneException"
        with pytest.raises(api.exceptions.GoneException):
            await asyncio.to_thread(api.get_connection, ConnectionId="not-a-connection")

        # A wrong secret is refused as AWS refuses it.
        impostor = management(first.endpoint, secret="wrong")
        with pytest.raises(ClientError) as refused:
            await asyncio.to_thread(impostor.post_to_connection, ConnectionId=first.id, Data=b"x")
        assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

        # Unsigned: 403 (not 426 Upgrade Required, not a message delivered).
        async with session.post(
            f"{process.url}/prod/@connections/{first.id}", data=b"unsigned"
        ) as plain:
            assert plain.status == 403
            assert plain.headers["x-amzn-ErrorType"] == "ForbiddenException"
        await first.ws.close()
