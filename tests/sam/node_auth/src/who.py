import json


def handler(event, context):
    authorizer = event["requestContext"]["authorizer"]
    return {
        "statusCode": 200,
        "body": json.dumps({"principal": authorizer["principalId"], "via": authorizer["runtime"]}),
    }
