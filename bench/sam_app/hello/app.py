from typing import Any

BODY = '{"message":"hello world"}'


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": BODY}
