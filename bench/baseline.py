"""The ceiling: a bare Starlette app answering the petstore routes with fixed JSON bytes.

Served by uvicorn with uvloop and httptools, access log off: the same ASGI server apitwin uses.
POST /pets gets a hand-written check of the Pet schema (422 otherwise), so scenario C still
parses and checks a body.

    python bench/baseline.py --port 8100
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PETS = b'[{"id":1,"name":"Garfield","tag":"cat"},{"id":2,"name":"Odie","tag":"dog"},{"id":3,"name":"Nermal","tag":"cat"}]'  # noqa: E501
PET = b'{"id":1,"name":"Garfield","tag":"cat"}'
INVALID = b'{"code":422,"message":"request body does not match Pet"}'
JSON = "application/json"


async def list_pets(request: Request) -> Response:
    return Response(PETS, media_type=JSON)


async def show_pet(request: Request) -> Response:
    return Response(PET, media_type=JSON)


def is_pet(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("id"), int)
        and isinstance(value.get("name"), str)
        and isinstance(value.get("tag", ""), str)
    )


async def create_pet(request: Request) -> Response:
    try:
        value = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        value = None
    if not is_pet(value):
        return Response(INVALID, status_code=422, media_type=JSON)
    return Response(PET, status_code=201, media_type=JSON)


app = Starlette(
    routes=[
        Route("/pets", list_pets, methods=["GET"]),
        Route("/pets", create_pet, methods=["POST"]),
        Route("/pets/{pet_id}", show_pet, methods=["GET"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
