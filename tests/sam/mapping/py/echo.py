import json
import os
import time


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "version": event.get("version", "1.0"),
                "stage": event["requestContext"]["stage"],
                "stageVariables": event.get("stageVariables"),
                "env": os.environ.get("ENV_NAME"),
                "fromFile": os.environ.get("FROM_FILE"),
                "memory": context.memory_limit_in_mb,
                "function": context.function_name,
            }
        ),
    }


def slow(event, context):
    time.sleep(min(3.0, context.get_remaining_time_in_millis() / 1000 + 1.0))
    return {"statusCode": 200, "body": "late"}
