"""The `context` object a Lambda handler receives, with Lambda's attribute names: one class for
function integrations, WebSocket routes and custom authorizers."""

from __future__ import annotations

import time
import uuid

from pygw.aws_ids import ACCOUNT_ID


def new_log_stream() -> str:
    """A log stream name as Lambda makes them: the day, the version and a random id."""
    day = time.strftime("%Y/%m/%d", time.gmtime())
    return f"{day}/[$LATEST]{uuid.uuid4().hex}"


class LambdaContext:
    """What a Lambda handler receives as `context`, with the same attribute names."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(
        self,
        request_id: str,
        function_name: str,
        timeout_ms: int,
        log_stream_name: str,
        memory_mb: int = 128,
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:local:{ACCOUNT_ID}:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_ms / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, "
            f"function_name={self.function_name!r})"
        )
