"""Powertools for AWS Lambda resolvers: a REST API (payload 1.0) and an HTTP API (payload 2.0)."""

from __future__ import annotations

import base64
from typing import Any

from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    Response,
)
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.shared.cookies import Cookie

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def _routes(app: APIGatewayRestResolver | APIGatewayHttpResolver) -> None:
    @app.get("/users/<user_id>")
    def get_user(user_id: str) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "verbose": app.current_event.get_query_string_value("verbose"),
        }

    @app.post("/users")
    def create_user() -> Response[Any]:
        payload = app.current_event.json_body
        return Response(
            status_code=201,
            content_type="application/json",
            body={"created": payload["name"]},
        )

    @app.get("/cookies")
    def cookies() -> Response[Any]:
        seen = app.current_event.get_header_value("cookie")
        cookie_list = getattr(app.current_event, "cookies", None)
        return Response(
            status_code=200,
            content_type="application/json",
            body={"header": seen, "cookies": cookie_list},
            cookies=[Cookie(name="session", value="abc"), Cookie(name="theme", value="dark")],
        )

    @app.get("/image")
    def image() -> Response[Any]:
        return Response(status_code=200, content_type="image/png", body=PNG)

    @app.get("/teapot")
    def teapot() -> Response[Any]:
        return Response(status_code=418, content_type="text/plain", body="short and stout")

    @app.get("/missing")
    def missing() -> None:
        raise NotFoundError("nothing here")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unhandled")


rest_app = APIGatewayRestResolver()
_routes(rest_app)
http_app = APIGatewayHttpResolver()
_routes(http_app)


def rest_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return rest_app.resolve(event, context)


def http_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return http_app.resolve(event, context)
