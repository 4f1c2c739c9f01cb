import itertools
import json
import os

_calls = itertools.count(1)


def get_item(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "id": (event.get("pathParameters") or {}).get("id"),
                "resource": event["resource"],
                "stage": event["requestContext"]["stage"],
                "table": (event.get("stageVariables") or {}).get("table"),
                "principal": event["requestContext"].get("authorizer", {}).get("principalId"),
                "greeting": os.environ.get("GREETING"),
                "memory": context.memory_limit_in_mb,
                "function": context.function_name,
                "call": next(_calls),
            }
        ),
    }
