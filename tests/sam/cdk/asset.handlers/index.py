import json


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "routeKey": event.get("routeKey"),
                "resource": event.get("resource"),
                "id": (event.get("pathParameters") or {}).get("id"),
                "function": context.function_name,
            }
        ),
    }


def authorize(event, context):
    return {"isAuthorized": (event.get("headers") or {}).get("x-token") == "ok"}


def ws(event, context):
    route = event["requestContext"]["routeKey"]
    if route in ("$connect", "$disconnect"):
        return {"statusCode": 200}
    body = json.loads(event.get("body") or "{}")
    return {"statusCode": 200, "body": json.dumps({"route": route, "echo": body.get("text")})}
