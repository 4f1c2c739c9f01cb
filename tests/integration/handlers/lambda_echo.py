"""Handlers written the way Lambda handlers are written, for the function integration tests."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from typing import Any

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def echo_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Returns the event it received as JSON, as AWS's recorded test function does."""
    return {"statusCode": 200, "body": json.dumps(event), "isBase64Encoded": False}


async def async_echo_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return echo_event(event, context)


def describe_context(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "aws_request_id": context.aws_request_id,
                "function_name": context.function_name,
                "function_version": context.function_version,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "thread": threading.current_thread().name,
            }
        ),
    }


async def async_thread_name(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": threading.current_thread().name}


def result_from_body(event: dict[str, Any], context: Any) -> Any:
    """Returns, as its result, whatever JSON the request carried: malformed results on demand."""
    body = event.get("body")
    if not body:
        return {}
    return json.loads(body)


async def async_result_from_body(event: dict[str, Any], context: Any) -> Any:
    return result_from_body(event, context)


def fails(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("secret detail that must stay in the log")


def sleeps(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(float((event.get("queryStringParameters") or {}).get("s", "1")))
    return {"statusCode": 200, "body": "late"}


async def async_sleeps(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(float((event.get("queryStringParameters") or {}).get("s", "1")))
    return {"statusCode": 200, "body": "late"}


def png(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "image/png"},
        "body": base64.b64encode(PNG).decode(),
        "isBase64Encoded": True,
    }


class Handlers:
    """Dotted handler references (`lambda_echo:Handlers.greet`) resolve attribute by attribute."""

    @staticmethod
    def greet(event: dict[str, Any], context: Any) -> str:
        return "hello"


class AsyncCallable:
    async def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": threading.current_thread().name}


async_callable = AsyncCallable()
not_callable = 42
