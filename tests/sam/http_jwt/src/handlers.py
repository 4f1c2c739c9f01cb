import json


def public(event, context):
    return {"message": "public", "routeKey": event["routeKey"]}


def me(event, context):
    claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"sub": claims["sub"], "routeKey": event["routeKey"]}),
    }
