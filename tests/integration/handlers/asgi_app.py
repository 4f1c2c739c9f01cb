"""A FastAPI app wrapped by Mangum, exactly as it would be deployed on Lambda."""

from __future__ import annotations

import base64

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from mangum import Mangum
from pydantic import BaseModel

app = FastAPI()

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


class Item(BaseModel):
    name: str
    price: float


@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}


@app.post("/items", status_code=201)
def create_item(item: Item) -> dict[str, object]:
    return {"created": item.name, "price": item.price}


@app.get("/missing")
def missing() -> None:
    raise HTTPException(status_code=404, detail="no such thing")


@app.get("/cookies")
def cookies(request: Request) -> JSONResponse:
    response = JSONResponse({"seen": dict(request.cookies)})
    response.set_cookie("session", "abc")
    response.set_cookie("theme", "dark")
    return response


@app.get("/image")
def image() -> Response:
    return Response(content=PNG, media_type="image/png")


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("unhandled")


handler = Mangum(app, lifespan="off")
