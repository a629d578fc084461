"""What a real HTTP client sees for each inbound fault kind, served by uvicorn on 127.0.0.1.

A tiny raw ASGI app stands in for the twin: the path names the fault kind, the query its params.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from apitwin.faults import INBOUND, FaultPlan, check_params
from apitwin.http import MockResponse
from apitwin.server.faulty import perform

from conftest import serve

BODY = orjson.dumps({"id": "exp_1", "name": "Ada Lovelace", "status": "active", "rate": 250})
PARAMS: dict[str, dict[str, Any]] = {
    "latency": {"ms": 300},
    "truncate": {"bytes": 10},
    "truncate-complete": {"bytes": 10, "mode": "complete"},
    "wrong_content_type": {"content_type": "text/html; charset=utf-8"},
    "empty": {"status": 202},
    "schema_break": {"mode": "wrong_type"},
}


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    name = scope["path"].strip("/")
    kind = name.removesuffix("-complete")
    plan = FaultPlan("flt_test", kind, check_params(kind, PARAMS.get(name), INBOUND), 1, "7")
    response = MockResponse(200, [("content-type", "application/json"), ("x-twin", "1")], BODY)
    await perform(send, plan, response, plan.rng())


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with serve(app) as origin, httpx.Client(base_url=origin, timeout=10) as http:
        yield http


def fresh(client: httpx.Client) -> httpx.Client:
    # Broken exchanges poison a kept-alive connection; each fault gets its own.
    return httpx.Client(base_url=str(client.base_url), timeout=10)


def test_an_unfaulted_kind_is_sent_as_it_is(client: httpx.Client) -> None:
    response = client.get("/schema_break")
    assert response.status_code == 200 and response.json()["id"] == "exp_1"


def test_latency_delays_the_normal_response(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.get("/latency")
    assert time.monotonic() - started >= 0.25
    assert response.status_code == 200 and response.content == BODY


def test_reset_closes_the_connection_without_a_response(client: httpx.Client) -> None:
    with fresh(client) as http, pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        http.get("/reset")
    assert client.get("/schema_break").status_code == 200  # the server carries on


def test_empty_sends_a_2xx_with_no_body(client: httpx.Client) -> None:
    response = client.get("/empty")
    assert response.status_code == 202 and response.content == b""
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == "0"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_truncate_cuts_the_body_and_drops_the_connection(client: httpx.Client) -> None:
    received = b""
    with (  # noqa: PT012
        fresh(client) as http,
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("GET", "/truncate") as response,
    ):
        assert response.headers["content-length"] == str(len(BODY))
        for chunk in response.iter_bytes():
            received += chunk
    assert BODY.startswith(received) and len(received) <= 10


def test_truncate_complete_sends_a_well_framed_cut_body(client: httpx.Client) -> None:
    response = client.get("/truncate-complete")
    assert response.status_code == 200 and response.content == BODY[:10]
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_malformed_json_keeps_the_json_content_type(client: httpx.Client) -> None:
    response = client.get("/malformed_json")
    assert response.headers["content-type"] == "application/json"
    assert response.content.startswith(BODY[:-1])
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_wrong_content_type_keeps_the_body(client: httpx.Client) -> None:
    response = client.get("/wrong_content_type")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == BODY and response.headers["x-twin"] == "1"


def test_chunk_garbage_is_a_chunked_stream_that_never_ends(client: httpx.Client) -> None:
    received = b""
    with (  # noqa: PT012
        fresh(client) as http,
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("GET", "/chunk_garbage") as response,
    ):
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        for chunk in response.iter_bytes():
            received += chunk
    assert received.startswith(BODY[: len(BODY) // 2]) or received == b""
